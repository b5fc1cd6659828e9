//! The small commands: doctor, matrix, emulators, pin, clean.

use super::Context;
use crate::doctor::{self, Level};
use crate::emulators;
use crate::error::{Error, Exit};
use crate::pin;
use crate::pipeline::Pipeline;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print the findings as JSON (`{"version": 1, "ready": …, "findings": […]}`).
    #[arg(long)]
    pub json: bool,
}

/// `harness doctor`: exit 0 when the machine is ready, 3 when it is not.
pub async fn doctor(ctx: &Context, args: &DoctorArgs) -> Result<Exit, Error> {
    let findings = doctor::run(&ctx.matrix, &ctx.options.engine).await;
    let problems = findings
        .iter()
        .filter(|f| f.level == Level::Problem)
        .count();
    if args.json {
        let out = serde_json::json!({
            "version": 1,
            "ready": problems == 0,
            "findings": findings,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("doctor json")
        );
    } else {
        println!("{}", doctor::render(&findings));
        match problems {
            0 => println!("\nready"),
            n => println!(
                "\n{n} problem(s): run the fix commands above, then `harness doctor` again"
            ),
        }
    }
    Ok(if problems == 0 {
        Exit::Success
    } else {
        Exit::Setup
    })
}

#[derive(Debug, clap::Args)]
pub struct MatrixArgs {
    #[arg(long)]
    pub json: bool,
}

impl MatrixArgs {
    pub fn exec(self, ctx: &Context) -> Result<Exit, Error> {
        if self.json {
            // Each platform's row, its slug, and the content hash of the image
            // the tree builds for it (a CI cache key: no engine, no build).
            let mut rows = vec![];
            for p in &ctx.matrix.platforms {
                let mut row = serde_json::to_value(p).expect("platform serializes");
                let content = crate::recipe::inputs(&ctx.matrix, &ctx.checkout.root, p, None)?.hash;
                row["slug"] = p.slug().into();
                row["content"] = content.into();
                // The CI runner its leg uses: its own architecture's, natively.
                if let Some(r) = ctx.matrix.runner(p) {
                    row["runner"] = r.label.clone().into();
                    row["placement"] = crate::placement::decide(
                        p,
                        &crate::placement::Machine {
                            arch: r.arch.clone(),
                            // GitHub's x86_64 runners run i386 programs.
                            runs_32bit: Some(true),
                            handlers: vec![],
                        },
                    )
                    .handler()
                    .unwrap_or("native")
                    .into();
                }
                rows.push(row);
            }
            println!("{}", serde_json::Value::Array(rows));
        } else {
            for p in &ctx.matrix.platforms {
                println!(
                    "{:16} {:20} {:8} {}",
                    p.docker, p.guix_system, p.debian_arch, p.emulator
                );
            }
        }
        Ok(Exit::Success)
    }
}

/// Per engine: how it runs each platform and why, the handlers registered.
pub async fn emulators(ctx: &Context, global: &super::Global) -> Result<Exit, Error> {
    let fleet = crate::fleet::Fleet::connect(
        &ctx.matrix,
        &ctx.options,
        &global.engines,
        &ctx.matrix.platforms,
    )
    .await?;
    for h in fleet.all() {
        let mine: Vec<_> = ctx
            .matrix
            .platforms
            .iter()
            .filter(|p| std::ptr::eq(fleet.pipeline(p), h))
            .collect();
        let placements: Vec<_> = h
            .placements()
            .await?
            .into_iter()
            .filter(|pl| mine.iter().any(|p| p.docker == pl.platform))
            .collect();
        println!("engine {} ({})", h.engine.url, h.arch().await?);
        let handlers = h.emulators().await?;
        for (s, pl) in emulators::statuses(&placements, handlers)
            .iter()
            .zip(&placements)
        {
            let detail = s
                .handler
                .as_ref()
                .map(|h| format!("; {}", h.fingerprint()))
                .unwrap_or_default();
            println!("  {:16} {:11} {}{detail}", s.platform, s.state, pl.why);
        }
    }
    Ok(Exit::Success)
}

#[derive(Debug, clap::Args)]
pub struct PinArgs {
    /// Print the newest commit ci.guix.gnu.org evaluated successfully (needs the internet).
    #[arg(long, conflicts_with = "set")]
    pub latest: bool,
    /// With --latest: pin that commit too (channels/channels.scm).
    #[arg(long, requires = "latest")]
    pub write: bool,
    /// Pin this commit.
    #[arg(long, value_name = "COMMIT")]
    pub set: Option<String>,
    /// The Cuirass instance for --latest.
    #[arg(long, value_name = "URL", default_value = "https://ci.guix.gnu.org")]
    pub cuirass: String,
}

impl PinArgs {
    pub async fn exec(self, ctx: &Context) -> Result<Exit, Error> {
        let path = ctx.checkout.channels();
        if self.latest {
            let commit = pin::latest(&self.cuirass).await?;
            if self.write {
                let old = pin::write(&path, &commit)?;
                println!("{}: {old} -> {commit}", path.display());
            } else {
                println!("{commit}");
            }
        } else if let Some(commit) = self.set {
            let old = pin::write(&path, &commit)?;
            println!("{}: {old} -> {commit}", path.display());
        } else {
            println!("{}", pin::read(&path)?);
        }
        Ok(Exit::Success)
    }
}

#[derive(Debug, clap::Args)]
pub struct CleanArgs {
    /// Keep the images (the build cache); remove only containers.
    #[arg(long)]
    pub containers_only: bool,
}

impl CleanArgs {
    pub async fn exec(self, ctx: &Context) -> Result<Exit, Error> {
        let h = Pipeline::new(ctx.matrix.clone(), ctx.options.clone()).await?;
        let prefix = h.matrix.defaults.image.clone();
        let (containers, images) = h.engine.clean(&prefix, self.containers_only).await?;
        println!(
            "removed {containers} labelled container(s) and {images} image tag(s) under {prefix}"
        );
        if !self.containers_only {
            let (dangling, bytes) = h.engine.prune_dangling().await?;
            println!(
                "removed {dangling} dangling labelled image(s) (left by interrupted or replaced builds), {} MiB",
                bytes >> 20
            );
        }
        Ok(Exit::Success)
    }
}
