//! The `harness` command: what a maintainer types.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use harness::matrix::{self, Matrix};
use harness::scenarios::Scenario;
use harness::{emulators, report, Harness};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "harness",
    version,
    about = "Build and check the guix-matrix image on every platform of matrix.toml"
)]
struct Cli {
    /// The matrix file.
    #[arg(long, global = true, env = "GUIX_MATRIX_FILE")]
    matrix: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: emulators, bases, images and every check on every platform.
    Run {
        /// Only these platforms (Docker platform, slug or Guix system); repeatable.
        #[arg(long = "platform")]
        platforms: Vec<String>,
        /// Only these scenarios; repeatable.
        #[arg(long = "scenario", value_enum)]
        scenarios: Vec<Scenario>,
        /// Legs at a time (default: the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Write report.json and junit.xml here.
        #[arg(long, default_value = "reports")]
        report: PathBuf,
        /// Run the legs that need the internet (real guix pull); also GUIX_MATRIX_ONLINE=1.
        #[arg(long)]
        online: bool,
    },
    /// Show or move the guix channel pin in channels/channels.scm.
    Pin {
        /// Print the newest commit ci.guix.gnu.org evaluated successfully (needs the internet).
        #[arg(long, conflicts_with = "set")]
        latest: bool,
        /// Pin this commit.
        #[arg(long)]
        set: Option<String>,
        /// The Cuirass instance for --latest.
        #[arg(long, default_value = "https://ci.guix.gnu.org")]
        cuirass: String,
    },

    /// Reproduce one leg with its full output; keeps the containers for inspection.
    Repro {
        /// The platform (Docker platform, slug or Guix system).
        #[arg(long)]
        platform: String,
        /// The scenario; every scenario when omitted.
        #[arg(long, value_enum)]
        scenario: Vec<Scenario>,
        /// Remove the containers even when a check fails.
        #[arg(long)]
        no_keep: bool,
    },
    /// An interactive shell in a platform's image, through the entry point,
    /// with the capabilities the scenarios use.
    Shell {
        #[arg(long)]
        platform: String,
        /// Put Guix's cache on tmpfs (default: what matrix.toml says for the platform).
        #[arg(long)]
        tmpfs: Option<bool>,
        /// The command (default: bash, with /entry-point.sh available).
        #[arg(trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Check the engine, binfmt_misc, emulators, disk, mirror and registry; print fixes.
    Doctor,
    /// The platform list, for a CI matrix.
    Matrix {
        #[arg(long)]
        json: bool,
    },
    /// Register the emulators the matrix needs and show each platform's status.
    Emulators,
    /// Remove every container the harness labelled and every image it tagged.
    Clean {
        /// Keep the images (the build cache); remove only containers.
        #[arg(long)]
        containers_only: bool,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GUIX_MATRIX_LOG")
                .unwrap_or_else(|_| "harness=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match real_main().await {
        Ok(code) => code,
        Err(e) => {
            // Our messages already carry their cause; print a cause only when it adds something.
            let mut text = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !text.contains(&cause) {
                    text = format!("{text}: {cause}");
                }
            }
            eprintln!("error: {text}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Ctrl-C: remove what this process started (its containers, and the build
/// step containers of an interrupted image build); nothing half-built is tagged.
async fn interrupted(engine: &harness::engine::Engine, started: i64) -> std::process::ExitCode {
    eprintln!("\ninterrupted: removing the containers this run started");
    let n = engine.remove_tracked().await + engine.remove_created_since(started).await;
    eprintln!("removed {n} container(s); images being built are not tagged");
    std::process::ExitCode::from(130)
}

async fn real_main() -> Result<std::process::ExitCode> {
    let cli = Cli::parse();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let matrix = Matrix::load(cli.matrix.clone().unwrap_or_else(matrix::default_path))?;
    match cli.command {
        Command::Matrix { json } => {
            if json {
                println!("{}", serde_json::to_string(&matrix.platforms)?);
            } else {
                for p in &matrix.platforms {
                    println!(
                        "{:16} {:20} {:8} {}",
                        p.docker, p.guix_system, p.debian_arch, p.emulator
                    );
                }
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Doctor => {
            let findings = harness::doctor::run(&matrix).await;
            println!("{}", harness::doctor::render(&findings));
            let problems = findings
                .iter()
                .filter(|f| f.level == harness::doctor::Level::Problem)
                .count();
            if problems > 0 {
                println!("\n{problems} problem(s): run the fix commands above, then `harness doctor` again");
                return Ok(std::process::ExitCode::FAILURE);
            }
            println!("\nready");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Repro {
            platform,
            scenario,
            no_keep,
        } => {
            let mut h = Harness::new(matrix).await?;
            h.echo = true;
            h.keep = !no_keep;
            let p = h.matrix.find(&platform)?.clone();
            let scenarios = if scenario.is_empty() {
                Scenario::ALL.to_vec()
            } else {
                scenario
            };
            let engine = h.engine.clone();
            let progress = |step: &str| eprintln!("[{}] == {step}", p.slug());
            let leg = tokio::select! {
                leg = harness::leg(&h, &p, &scenarios, &progress) => leg,
                _ = tokio::signal::ctrl_c() => return Ok(interrupted(&engine, started).await),
            };
            println!("\n{}\n", report::table(std::slice::from_ref(&leg)));
            for o in &leg.outcomes {
                let Some(id) = &o.kept_container else {
                    continue;
                };
                if o.passed() || matches!(o.verdict, harness::scenarios::Verdict::Skipped(_)) {
                    h.engine.remove_container(id).await;
                    continue;
                }
                let short = &id[..12.min(id.len())];
                println!(
                    "{} failed; its container is kept for inspection:",
                    o.scenario.name()
                );
                println!("  docker logs {short}");
                println!(
                    "  docker commit {short} guix-matrix-repro:{slug} && docker run --rm -it --platform {} {} --entrypoint bash guix-matrix-repro:{slug}",
                    p.docker,
                    harness::run::Privilege::GuixDaemon.docker_flags(),
                    slug = p.slug()
                );
                println!("  remove it: docker rm {short}  (or `harness clean`)");
            }
            println!("{}", report::closing_line(std::slice::from_ref(&leg)));
            Ok(if leg.failed() {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            })
        }
        Command::Shell {
            platform,
            tmpfs,
            command,
        } => {
            let h = Harness::new(matrix).await?;
            let p = h.matrix.find(&platform)?.clone();
            let prepared = h.prepare(&p).await?;
            let mut spec =
                harness::run::RunSpec::new(prepared.image.tag.clone(), "shell").platform(&p.docker);
            spec.network_none = false;
            if tmpfs.unwrap_or(p.cache_tmpfs) {
                spec = spec.tmpfs("/root/.cache/guix", "rw,exec,size=2g");
            }
            spec.cmd = if command.is_empty() {
                vec!["bash".into()]
            } else {
                command
            };
            let args = spec.docker_args();
            eprintln!("docker {}", args.join(" "));
            let status = std::process::Command::new("docker")
                .args(&args)
                .status()
                .context("running the docker CLI (is it installed?)")?;
            Ok(std::process::ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8,
            ))
        }
        Command::Emulators => {
            let h = Harness::new(matrix).await?;
            let handlers = h.emulators().await?;
            for s in emulators::statuses(&h.matrix.platforms, handlers) {
                let detail = s
                    .handler
                    .as_ref()
                    .map(|h| h.fingerprint())
                    .unwrap_or_default();
                println!("{:16} {:11} {}", s.platform, s.state, detail);
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Clean { containers_only } => {
            let h = Harness::new(matrix).await?;
            let prefix = h.matrix.defaults.image.clone();
            let (containers, images) = h.engine.clean(&prefix, containers_only).await?;
            println!("removed {containers} labelled container(s) and {images} image tag(s) under {prefix}");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Pin {
            latest,
            set,
            cuirass,
        } => {
            let path = harness::repo_root().join("channels/channels.scm");
            if latest {
                println!("{}", harness::pin::latest(&cuirass).await?);
            } else if let Some(commit) = set {
                let old = harness::pin::write(&path, &commit)?;
                println!("{}: {old} -> {commit}", path.display());
            } else {
                println!("{}", harness::pin::read(&path)?);
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Run {
            platforms,

            scenarios,
            jobs,
            report: dir,
            online,
        } => {
            let mut h = Harness::new(matrix).await?;
            h.online |= online;

            let selected = h.matrix.select(&platforms)?;
            let scenarios = if scenarios.is_empty() {
                Scenario::ALL.to_vec()
            } else {
                scenarios
            };
            let jobs =
                jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
            let engine = h.engine.clone();
            tokio::select! {
                legs = run_legs(&h, &selected, &scenarios, jobs) => {
                    println!("\n{}\n", report::table(&legs));
                    report::write(&dir, &legs).with_context(|| format!("writing reports to {}", dir.display()))?;
                    println!("reports: {}/report.json, {}/junit.xml", dir.display(), dir.display());
                    println!("{}", report::closing_line(&legs));
                    Ok(if legs.iter().any(|l| l.failed()) { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS })
                }
                _ = tokio::signal::ctrl_c() => Ok(interrupted(&engine, started).await),
            }
        }
    }
}

async fn run_legs(
    h: &Harness,
    platforms: &[harness::matrix::Platform],
    scenarios: &[Scenario],
    jobs: usize,
) -> Vec<report::Leg> {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {prefix:16} {elapsed:>4} {wide_msg}")
        .expect("progress template");
    let mut legs: Vec<report::Leg> = futures::stream::iter(platforms.iter().cloned())
        .map(|p| {
            let bar = bars.add(
                ProgressBar::new_spinner()
                    .with_style(style.clone())
                    .with_prefix(p.docker.clone()),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            async move {
                bar.set_message("waiting");
                let progress = |msg: &str| bar.set_message(msg.to_string());
                let leg = harness::leg(h, &p, scenarios, &progress).await;
                bar.finish_with_message(format!("{} in {:.0?}", leg.result(), leg.elapsed));
                leg
            }
        })
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
    legs.sort_by_key(|l| platforms.iter().position(|p| p.docker == l.platform));
    legs
}
