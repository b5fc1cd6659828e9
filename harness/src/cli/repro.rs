//! `harness repro`: one leg with its full output; the containers of failing checks kept, with the commands to look inside.

use super::{interrupt, Context};
use crate::engine::run::Privilege;
use crate::error::{Error, Exit};
use crate::fleet::Fleet;
use crate::leg::{self, Watch};
use crate::matrix::Platform;
use crate::report;
use crate::scenarios::{Outcome, Scenario};

#[derive(Debug, clap::Args)]
pub struct ReproArgs {
    /// The platform, by any name of its matrix.toml row (linux/arm/v7, arm, armhf…).
    #[arg(long, value_name = "PLATFORM", help_heading = "Selection")]
    pub platform: String,
    /// The scenario; every scenario when omitted.
    #[arg(long, value_name = "SCENARIO", value_enum, help_heading = "Selection")]
    pub scenario: Vec<Scenario>,
    /// Remove the containers even when a check fails.
    #[arg(long, help_heading = "Output")]
    pub no_keep: bool,
    #[command(flatten)]
    pub pull: super::PullArgs,
    #[command(flatten)]
    pub source: super::SourceArgs,
    /// Write the leg's report.json, junit.xml and failure bundle in this
    /// directory (default: reports/repro/, never the run's reports/).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "reports/repro",
        help_heading = "Output"
    )]
    pub report: std::path::PathBuf,
    /// A repro in which no check ran (every one skipped) exits 0, not 6.
    #[arg(long, help_heading = "Output")]
    pub accept_skipped: bool,
    #[command(flatten)]
    pub build: super::BuildArgs,
    #[command(flatten)]
    pub workspace: super::Workspace,
}

/// Every step on its own line, prefixed with the platform (none with -q).
struct Steps {
    quiet: bool,
}

impl Watch for Steps {
    fn step(&self, platform: &Platform, step: &str) {
        if !self.quiet {
            eprintln!("[{}] == {step}", platform.slug());
        }
    }
}

impl ReproArgs {
    pub async fn exec(self, ctx: &Context, global: &super::Global) -> Result<Exit, Error> {
        let mut options = ctx.options.clone();
        options.echo = true;
        options.keep = !self.no_keep;
        self.pull.apply(&mut options);
        self.source.apply(ctx, &mut options).await?;
        let p = ctx.matrix.find(&self.platform)?.clone();
        let mut fleet = Fleet::connect(
            &ctx.matrix,
            &options,
            &self.build.engine.engines,
            std::slice::from_ref(&p),
        )
        .await?;
        fleet.hold(std::slice::from_ref(&p)).await?;
        let h = fleet.pipeline(&p);
        let scenarios = if self.scenario.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            self.scenario.clone()
        };
        let steps = Steps {
            quiet: global.quiet,
        };
        let leg = tokio::select! {
            leg = leg::leg(h, &p, &scenarios, &steps) => leg,
            signal = interrupt() => return Ok(fleet.clean_after_interrupt(ctx.started, signal).await),
        };
        println!("\n{}\n", report::table(std::slice::from_ref(&leg)));
        // The hints run the container as the leg did (its tmpfs cache).
        let leg_cache_tmpfs = h
            .placement(&p)
            .await
            .map_or(p.cache_tmpfs, |placed| placed.cache_tmpfs);
        for o in &leg.outcomes {
            let Some(id) = &o.kept_container else {
                continue;
            };
            if !kept(o) {
                h.engine.remove_container(id).await;
                continue;
            }
            let look = Look {
                cli: h.engine.cli_flags(),
                cache_tmpfs: leg_cache_tmpfs,
            };
            for line in inspect_hints(o, id, &p, &look) {
                println!("{line}");
            }
        }
        println!("{}", report::closing_line(std::slice::from_ref(&leg)));
        let pin = crate::pin::read(&ctx.checkout.channels()).unwrap_or_else(|e| e.to_string());
        let run = report::RunReport::new(
            &pin,
            ctx.checkout.commit(),
            &scenarios,
            std::slice::from_ref(&leg),
            h.tools(),
        );
        match report::write(&self.report, &run) {
            Ok(()) => println!("reports: {}/report.json", self.report.display()),
            Err(e) => eprintln!(
                "error: cannot write the reports to {}: {e}",
                self.report.display()
            ),
        }
        fleet.give_back().await;
        Ok(leg::exit(std::slice::from_ref(&leg), self.accept_skipped))
    }
}

/// The container of a check stays only when the check failed (or crashed).
pub fn kept(o: &Outcome) -> bool {
    o.verdict.is_failure()
}

/// Where the kept container is and how its leg ran it.
pub struct Look {
    /// The docker CLI's options for the leg's engine (`--host URL`, or none).
    pub cli: Vec<String>,
    /// Whether the leg put Guix's cache on tmpfs (armhf under qemu).
    pub cache_tmpfs: bool,
}

/// How to look inside the kept container of a failed check: on the leg's
/// engine, run as the leg ran it.
pub fn inspect_hints(o: &Outcome, id: &str, p: &Platform, look: &Look) -> Vec<String> {
    let short = &id[..12.min(id.len())];
    let docker = std::iter::once("docker".to_string())
        .chain(look.cli.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let tmpfs = match look.cache_tmpfs {
        true => " --tmpfs /root/.cache/guix:rw,exec,size=2g",
        false => "",
    };
    vec![
        format!(
            "{} failed; its container is kept for inspection:",
            o.scenario.name()
        ),
        format!("  {docker} logs {short}"),
        format!(
            "  {docker} commit {short} guix-matrix-repro:{slug} && {docker} run --rm -it --platform {} {}{tmpfs} --entrypoint bash guix-matrix-repro:{slug}",
            p.docker,
            Privilege::GuixDaemon.docker_flags(),
            slug = p.slug()
        ),
        format!("  remove it: {docker} rm {short}  (or `harness clean`)"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::{Check, Verdict};

    fn outcome(verdict: Verdict) -> Outcome {
        let mut o = Check::new(Scenario::Tmpfs, "linux/arm/v7").finish();
        o.verdict = verdict;
        o.kept_container = Some("0123456789abcdef0123".into());
        o
    }

    #[test]
    fn only_failed_checks_keep_their_container() {
        assert!(kept(&outcome(Verdict::Failed("x".into()))));
        assert!(kept(&outcome(Verdict::EmulatorCrash("x".into()))));
        assert!(!kept(&outcome(Verdict::Passed)));
        assert!(!kept(&outcome(Verdict::Skipped("offline".into()))));
    }

    #[test]
    fn hints_name_the_short_id_the_platform_and_the_capabilities() {
        let m =
            crate::matrix::Matrix::load(crate::paths::Checkout::find().unwrap().matrix()).unwrap();
        let p = m.find("linux/arm/v7").unwrap();
        let o = outcome(Verdict::Failed("x".into()));
        let look = Look {
            cli: vec!["--host".into(), "tcp://arm:2375".into()],
            cache_tmpfs: true,
        };
        let hints = inspect_hints(&o, "0123456789abcdef0123", p, &look).join("\n");
        assert!(
            hints.starts_with("tmpfs failed; its container is kept"),
            "{hints}"
        );
        assert!(
            hints.contains("docker --host tcp://arm:2375 logs 0123456789ab\n"),
            "{hints}"
        );
        assert!(
            hints.contains("--tmpfs /root/.cache/guix:rw,exec,size=2g --entrypoint bash"),
            "{hints}"
        );
        let here = Look {
            cli: vec![],
            cache_tmpfs: false,
        };
        let hints = inspect_hints(&o, "0123456789abcdef0123", p, &here).join("\n");
        assert!(hints.contains("  docker logs 0123456789ab\n"), "{hints}");
        assert!(
            hints.contains("--platform linux/arm/v7 --cap-add SYS_ADMIN"),
            "{hints}"
        );
        assert!(!hints.contains("privileged"), "{hints}");
    }
}
