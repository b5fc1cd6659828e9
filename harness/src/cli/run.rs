//! `harness run`: the main job, with reports that are written whatever happens.

use super::progress::Progress;
use super::{interrupt, Context, Global};
use crate::error::{Error, Exit};
use crate::fleet::Fleet;
use crate::leg;
use crate::record::Tool;
use crate::report::{self, Leg};
use crate::scenarios::Scenario;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Only these platforms, by any name of their matrix.toml row
    /// (linux/arm64, arm64, aarch64, aarch64-linux…); repeatable.
    #[arg(long = "platform", value_name = "PLATFORM", help_heading = "Selection")]
    pub platforms: Vec<String>,
    /// Only these scenarios; repeatable.
    #[arg(
        long = "scenario",
        value_name = "SCENARIO",
        value_enum,
        help_heading = "Selection"
    )]
    pub scenarios: Vec<Scenario>,
    /// Run the checks' platform-independent steps (the entry point's failure
    /// reports, `guix pull --url` keeping the pin) on every platform, not once
    /// per run on a native one.
    #[arg(long, help_heading = "Selection")]
    pub no_shared_steps: bool,
    /// Legs checking at a time, per engine (default: the number of cores);
    /// one leg more prepares meanwhile.
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256), help_heading = "Selection")]
    pub jobs: Option<u16>,
    /// Write report.json, junit.xml and failure bundles in this directory
    /// (default: reports/, and reports/image/ for --image, so that checking a
    /// published image never overwrites the report of the run that proved it).
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub pull: super::PullArgs,
    #[command(flatten)]
    pub source: super::SourceArgs,
    /// A run in which no check ran (every one skipped) exits 0, not 6.
    #[arg(long, help_heading = "Output")]
    pub accept_skipped: bool,
    /// Without a terminal, say every this many seconds which step each leg is in.
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600), help_heading = "Output")]
    pub heartbeat: u64,
    #[command(flatten)]
    pub build: super::BuildArgs,
    #[command(flatten)]
    pub workspace: super::Workspace,
}

impl RunArgs {
    /// The engines, held for the selected platforms, with the leg that runs
    /// the platform-independent steps decided up front.
    async fn connect(
        &self,
        ctx: &Context,
        options: &crate::pipeline::Options,
        selected: &[crate::matrix::Platform],
    ) -> Result<Fleet, Error> {
        let engines = &self.build.engine.engines;
        let mut fleet = Fleet::connect(&ctx.matrix, options, engines, selected).await?;
        fleet.hold(selected).await?;
        if !self.no_shared_steps {
            if let Some(on) = fleet.share_steps(selected).await? {
                println!("platform-independent steps: on {on}, for every leg (--no-shared-steps: on each)");
            }
        }
        Ok(fleet)
    }

    pub async fn exec(self, ctx: &Context, global: &Global) -> Result<Exit, Error> {
        // A platform name that is wrong is said first, alone.
        let selected = ctx.matrix.select(&self.platforms)?;
        let mut options = ctx.options.clone();
        self.pull.apply(&mut options);
        self.source.apply(ctx, &mut options).await?;
        let pin = crate::pin::read(&ctx.checkout.channels()).unwrap_or_else(|e| e.to_string());
        let commit = ctx.checkout.commit();
        // Which checkout's matrix.toml, Dockerfile and scripts this run uses.
        println!(
            "checkout {} (matrix {})",
            ctx.checkout.root.display(),
            ctx.matrix.path.display()
        );
        let scenarios = if self.scenarios.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            self.scenarios.clone()
        };
        let fleet = match self.connect(ctx, &options, &selected).await {
            Ok(fleet) => fleet,
            Err(e) => {
                // The uploaded artifact is never empty: the report names the step.
                let legs = [setup_failure("connect to the Docker engines", &e)];
                self.write(&scenarios, &legs, &pin, &commit, vec![]);
                return Err(e);
            }
        };
        let jobs = self.jobs.map_or_else(
            || std::thread::available_parallelism().map_or(2, |n| n.get()),
            usize::from,
        );
        let progress = Progress::new(global.quiet);
        let started = std::time::Instant::now();
        let beat = Duration::from_secs(self.heartbeat);
        let heartbeat = async {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
            loop {
                tick.tick().await;
                progress.heartbeat();
            }
        };
        tokio::select! {
            mut legs = leg::run_legs(&fleet, &selected, &scenarios, jobs, &progress) => {
                crate::scenarios::settle_shared(&mut legs);
                println!("\n{}\n", report::table(&legs));
                println!("{}", report::per_check(&legs));
                let (total, ideal) = leg::packing(&legs, jobs);
                let wall = started.elapsed();
                println!(
                    "wall {:.0}s for {:.0}s of legs on {} engine(s), {jobs} lane(s) each; ideal packing {:.0}s ({:.2}×)",
                    wall.as_secs_f64(),
                    total.as_secs_f64(),
                    fleet.all().len(),
                    ideal.as_secs_f64(),
                    wall.as_secs_f64() / ideal.as_secs_f64().max(0.001)
                );
                self.write(&scenarios, &legs, &pin, &commit, fleet.tools());
                println!("{}", report::closing_line(&legs));
                fleet.give_back().await;
                Ok(leg::exit(&legs, self.accept_skipped))
            }
            _ = heartbeat => unreachable!("the heartbeat never ends"),
            signal = interrupt() => {
                let exit = fleet.clean_after_interrupt(ctx.started, signal).await;
                let mut legs = progress.finished();
                for (platform, step) in progress.unfinished() {
                    let mut leg = Leg::new(&platform, String::new(), Duration::ZERO);
                    leg.error = Some(format!("interrupted (signal {signal}) during `{step}`"));
                    legs.push(leg);
                }
                self.write(&scenarios, &legs, &pin, &commit, fleet.tools());
                Ok(exit)
            }
        }
    }

    /// Where this run's reports go.
    fn report_dir(&self) -> PathBuf {
        self.report.clone().unwrap_or_else(|| {
            if self.source.image.is_some() {
                PathBuf::from("reports/image")
            } else {
                PathBuf::from("reports")
            }
        })
    }

    /// report.json, junit.xml, failure bundles and, in GitHub Actions, the
    /// step summary; a report that cannot be written is said, never fatal.
    fn write(
        &self,
        scenarios: &[Scenario],
        legs: &[Leg],
        pin: &str,
        commit: &Option<String>,
        tools: Vec<Tool>,
    ) {
        let dir = &self.report_dir();
        let run = report::RunReport::new(pin, commit.clone(), scenarios, legs, tools);
        match report::write(dir, &run) {
            Ok(()) => println!(
                "reports: {}/report.json, {}/junit.xml",
                dir.display(),
                dir.display()
            ),
            Err(e) => eprintln!("error: cannot write the reports to {}: {e}", dir.display()),
        }
        if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|s| !s.is_empty()) {
            if let Err(e) = append(Path::new(&summary), &report::markdown(legs)) {
                eprintln!("error: cannot write the step summary: {e}");
            }
        }
    }
}

/// A leg that stands for a step before any leg could run.
fn setup_failure(step: &str, e: &Error) -> Leg {
    let mut leg = Leg::new(&format!("setup: {step}"), String::new(), Duration::ZERO);
    leg.error = Some(e.report());
    leg
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(text.as_bytes())
}
