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

    /// The platform list, for a CI matrix.
    Matrix {
        #[arg(long)]
        json: bool,
    },
    /// Register the emulators the matrix needs and show each platform's status.
    Emulators,
    /// Remove every container and image the harness labelled.
    Clean,
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
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn real_main() -> Result<std::process::ExitCode> {
    let cli = Cli::parse();
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
        Command::Clean => {
            let h = Harness::new(matrix).await?;
            let (containers, images) = h.engine.clean_all().await?;
            println!(
                "removed {containers} container(s) and {images} image(s) labelled by the harness"
            );
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
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("\ninterrupted: removing the containers this run started");
                    let n = engine.remove_tracked().await;
                    eprintln!("removed {n} container(s); images being built are not tagged");
                    Ok(std::process::ExitCode::from(130))
                }
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
