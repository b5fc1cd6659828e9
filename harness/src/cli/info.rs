//! The small commands: doctor, matrix, emulators (read only unless asked), pin, clean.

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
    #[command(flatten)]
    pub engine: super::EngineArgs,
    #[command(flatten)]
    pub workspace: super::Workspace,
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
    /// Print the platforms as JSON for a CI matrix (`{"version": 1,
    /// "platforms": [row + slug, content, runner, placement]}`; a workflow
    /// takes `.platforms`).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub workspace: super::Workspace,
}

/// The version of `matrix --json` (1: the platforms under `platforms`).
pub const MATRIX_JSON_VERSION: u32 = 1;

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
            println!(
                "{}",
                serde_json::json!({"version": MATRIX_JSON_VERSION, "platforms": rows})
            );
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

#[derive(Debug, clap::Args)]
pub struct EmulatorsArgs {
    /// Register the handlers the matrix needs on each engine's host (with
    /// the F flag; needs CAP_SYS_ADMIN in the helper: host root).
    #[arg(long, conflicts_with = "uninstall")]
    pub install: bool,
    /// Unregister those handlers from each engine's host.
    #[arg(long)]
    pub uninstall: bool,
    /// Print the decision and the handlers as JSON
    /// (`{"version": 1, "engines": [{"engine", "arch", "platforms": […]}]}`).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: super::EngineArgs,
    #[command(flatten)]
    pub workspace: super::Workspace,
}

impl EmulatorsArgs {
    /// Per engine: how it runs each platform and why, and its handlers as
    /// the kernel has them — read only, unless --install or --uninstall.
    pub async fn exec(self, ctx: &Context) -> Result<Exit, Error> {
        let fleet = crate::fleet::Fleet::connect(
            &ctx.matrix,
            &ctx.options,
            &self.engine.engines,
            &ctx.matrix.platforms,
        )
        .await?;
        let mut engines = vec![];
        for h in fleet.all() {
            let placements: Vec<_> = h
                .placements()
                .await?
                .into_iter()
                .filter(|pl| {
                    ctx.matrix
                        .find(&pl.platform)
                        .is_ok_and(|p| std::ptr::eq(fleet.pipeline(p), h))
                })
                .collect();
            let handlers = if self.install {
                h.emulators().await?.clone()
            } else if self.uninstall {
                h.unregister_emulators().await?
            } else {
                h.handler_status().await?
            };
            let rows: Vec<serde_json::Value> = emulators::statuses(&placements, &handlers)
                .into_iter()
                .zip(&placements)
                .map(|(s, pl)| {
                    serde_json::json!({
                        "platform": s.platform,
                        "state": s.state,
                        "why": pl.why,
                        "handler": s.handler,
                    })
                })
                .collect();
            engines.push(serde_json::json!({
                "engine": h.engine.url,
                "arch": h.arch().await?,
                "platforms": rows,
            }));
        }
        if self.json {
            let out = serde_json::json!({"version": 1, "engines": engines});
            println!(
                "{}",
                serde_json::to_string_pretty(&out).expect("emulators json")
            );
        } else {
            print_emulators(&engines, self.install || self.uninstall);
        }
        Ok(Exit::Success)
    }
}

/// The emulators view: per engine, each platform's state and why.
fn print_emulators(engines: &[serde_json::Value], changed: bool) {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let mut missing = false;
    for e in engines {
        println!("engine {} ({})", text(&e["engine"]), text(&e["arch"]));
        for p in e["platforms"].as_array().into_iter().flatten() {
            let detail = match &p["handler"] {
                serde_json::Value::Null => String::new(),
                h => format!(
                    "; {}: {} (flags {}, {})",
                    text(&h["name"]),
                    text(&h["qemu"]),
                    text(&h["flags"]),
                    text(&h["interpreter"])
                ),
            };
            missing |= text(&p["state"]) == "missing";
            println!(
                "  {:16} {:11} {}{detail}",
                text(&p["platform"]),
                text(&p["state"]),
                text(&p["why"])
            );
        }
    }
    if missing && !changed {
        println!("
to register what is missing: harness emulators --install (changes the host: binfmt_misc handlers for every process)");
    }
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
    #[command(flatten)]
    pub workspace: super::Workspace,
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
    /// Remove what live runs hold too (their containers and the tags of
    /// their platforms): those runs then fail.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub engine: super::EngineArgs,
    #[command(flatten)]
    pub workspace: super::Workspace,
}

impl CleanArgs {
    pub async fn exec(self, ctx: &Context) -> Result<Exit, Error> {
        let h = Pipeline::new(ctx.matrix.clone(), ctx.options.clone()).await?;
        let prefix = h.matrix.defaults.image.clone();
        let out = h
            .engine
            .clean(&prefix, self.containers_only, self.force)
            .await?;
        println!(
            "removed {} labelled container(s) and {} image tag(s) under {prefix}, and {} lease(s) of runs that are gone",
            out.containers, out.images, out.dead_leases
        );
        if !out.live.is_empty() {
            let runs: Vec<String> = out
                .live
                .iter()
                .map(|l| format!("{} ({})", l.run, l.slugs.join(", ")))
                .collect();
            println!(
                "left alone: {} container(s) and {} image tag(s) held by live run(s) {}; `harness clean --force` removes them too (those runs then fail)",
                out.kept_containers,
                out.kept_images,
                runs.join("; ")
            );
        }
        if !out.live.is_empty() && !self.force {
            println!("dangling images kept: a live run's build may still use them");
        } else if !self.containers_only {
            let (dangling, bytes) = h.engine.prune_dangling().await?;
            println!(
                "removed {dangling} dangling labelled image(s) (left by interrupted or replaced builds), {} MiB",
                bytes >> 20
            );
        }
        Ok(Exit::Success)
    }
}
