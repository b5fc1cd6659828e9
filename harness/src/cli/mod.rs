//! The `harness` command: global options, one module per command, and the exit-code contract.

mod completions;
mod info;
mod keygen;
pub mod progress;
mod rebuild;
mod release;
mod repro;
mod run;
mod shell;
mod verify;

use crate::error::{Error, Exit};
use crate::matrix::Matrix;
use crate::paths::Checkout;
use crate::pipeline::Options;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Printed under `--help`: what scripts can rely on.
const EXIT_CODES: &str = "\
Exit codes:
  0    everything that ran passed
  1    one or more legs failed (a check, or a platform's preparation)
  2    usage: a wrong option, platform, scenario or path given, or a bad matrix.toml
  3    setup: the machine is not ready (no engine, no emulator, no disk, no network)
  4    refused: `release` found an image that is not the Guix of the checkout's pin
       (not pulled by guix pull, pulled to another commit, a run of another pin, or
       not every check passed with --require-all), or a release given to --from or
       --image is not what it says (its pin, signature, checksums, labels, content);
       nothing was shipped or used
  5    unverified: a release given to --image (or to --from with --require-verified,
       or to `verify`) has no pinned digest and no signature by a trusted key
  6    nothing ran: every check of every leg was skipped (offline, or not for this
       platform); --accept-skipped makes such a run exit 0
  130  interrupted by SIGINT (Ctrl-C), 143 by SIGTERM: the containers it started are removed

Environment: one variable per option, named after it (GUIX_MATRIX_ROOT, GUIX_MATRIX_MATRIX,
GUIX_MATRIX_BUILD_BASE, GUIX_MATRIX_ONLINE, GUIX_MATRIX_ENGINE, GUIX_MATRIX_FROM,
GUIX_MATRIX_TRUST_KEY, GUIX_MATRIX_REQUIRE_VERIFIED, GUIX_MATRIX_SIGN_KEY, GUIX_MATRIX_SOURCE;
each shown with its option; the old GUIX_MATRIX_FILE, GUIX_MATRIX_ENGINES, GUIX_MATRIX_TRUST_KEYS
and GUIX_MATRIX_SIGNING_KEY are read for one more release, with a deprecation line), GUIX_MATRIX_LOG
(log filter), NO_COLOR and CARGO_TERM_COLOR (colour, when --color is auto), GUIX_MATRIX_REGISTRY_USER,
GUIX_MATRIX_REGISTRY_TOKEN and GUIX_MATRIX_REGISTRY_HOST (a registry login, for that host only), DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH (as the docker
CLI reads them), GITHUB_STEP_SUMMARY (run writes its table there in Markdown).";

/// Variables renamed after their options, the old name first: read for one
/// more release, with a deprecation line.
pub const RENAMED: &[(&str, &str)] = &[
    ("GUIX_MATRIX_FILE", "GUIX_MATRIX_MATRIX"),
    ("GUIX_MATRIX_ENGINES", "GUIX_MATRIX_ENGINE"),
    ("GUIX_MATRIX_TRUST_KEYS", "GUIX_MATRIX_TRUST_KEY"),
    ("GUIX_MATRIX_SIGNING_KEY", "GUIX_MATRIX_SIGN_KEY"),
];

/// Takes each old variable name as its new one (unless the new one is set),
/// saying so. Called before any thread starts (it sets variables).
pub fn read_renamed_variables() {
    for (old, new) in RENAMED {
        let Some(value) = std::env::var_os(old) else {
            continue;
        };
        if std::env::var_os(new).is_none() {
            // SAFETY (edition 2024's rule): no other thread runs yet.
            std::env::set_var(new, value);
        }
        eprintln!("warning: {old} is deprecated: set {new} (read for one more release)");
    }
}

/// `harness --version`: the crate's version, the commit and its date.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("GUIX_MATRIX_COMMIT"),
    " ",
    env!("GUIX_MATRIX_COMMIT_DATE"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "harness",
    version = VERSION,
    about = "Build and check the guix-matrix image on every platform of matrix.toml",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// What every command takes, anywhere on the line: how much it logs, in colour or not.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// More log lines (-v debug, -vv trace); GUIX_MATRIX_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only warnings and errors in the log.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Colour in the log: auto (CARGO_TERM_COLOR when set, else a terminal
    /// unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_name = "WHEN", value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

/// The checkout and its matrix: every command that reads them.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Checkout")]
pub struct Workspace {
    /// The checkout to use (default: found from the current directory upwards).
    #[arg(long, value_name = "DIR", env = "GUIX_MATRIX_ROOT")]
    pub root: Option<PathBuf>,
    /// The matrix file (default: the checkout's matrix.toml).
    #[arg(long, value_name = "FILE", env = "GUIX_MATRIX_MATRIX")]
    pub matrix: Option<PathBuf>,
}

/// The engine a command talks to: every command that calls one.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Engine")]
pub struct EngineArgs {
    /// The engine: URL (unix:///…, tcp://HOST:PORT with TLS when
    /// DOCKER_TLS_VERIFY is set, https://HOST:PORT) for every command, or
    /// PLATFORM=URL for that platform's legs; repeatable. Default: DOCKER_HOST,
    /// else the docker CLI's context (DOCKER_CONTEXT, or its current one),
    /// else the local socket.
    #[arg(
        long = "engine",
        value_name = "[PLATFORM=]URL",
        env = "GUIX_MATRIX_ENGINE",
        value_delimiter = ','
    )]
    pub engines: Vec<crate::fleet::EngineArg>,
}

/// The engine, and where the Debian base comes from: the commands that build images.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Engine")]
pub struct BuildArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Build the Debian base from the mirror (mmdebstrap), never try to pull
    /// it from a registry. (The internet checks and the real `guix pull` are
    /// --online, the one option for network use.)
    #[arg(long, env = "GUIX_MATRIX_BUILD_BASE", value_parser = clap::builder::BoolishValueParser::new())]
    pub build_base: bool,
}

/// Options that were global before each command took only its own: given
/// before the command, they are moved after it, with a deprecation line
/// (for one more release). The bool says whether each takes a value.
const MOVED: &[(&str, bool)] = &[
    ("--root", true),
    ("--matrix", true),
    ("--engine", true),
    ("--build-base", false),
];

/// Moves the options that became the commands' own from before the command
/// to after it, saying so: `harness --engine URL run` keeps working for one
/// more release.
pub fn move_old_global_options(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut before = vec![];
    let mut moved = vec![];
    let mut rest = args.into_iter();
    if let Some(program) = rest.next() {
        before.push(program);
    }
    while let Some(arg) = rest.next() {
        let text = arg.to_string_lossy().into_owned();
        let name = text.split('=').next().unwrap_or_default().to_string();
        let old = MOVED.iter().find(|(n, _)| *n == name);
        if let Some((n, takes_value)) = old {
            eprintln!(
                "warning: `{n}` before the command is deprecated: put it after the command (`harness COMMAND {n}…`); read so for one more release"
            );
            let needs_next = *takes_value && !text.contains('=');
            moved.push(arg);
            if needs_next {
                moved.extend(rest.next());
            }
        } else if text == "--color" {
            before.push(arg);
            before.extend(rest.next());
        } else if text.starts_with('-') {
            before.push(arg);
        } else {
            // The command: the moved options follow it.
            before.push(arg);
            before.append(&mut moved);
            before.extend(rest);
            return before;
        }
    }
    before.extend(moved);
    before
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The main job: emulators, bases, images and every check on every platform.
    Run(run::RunArgs),
    /// Reproduce one leg with its full output; keeps the containers of failing checks.
    Repro(repro::ReproArgs),
    /// An interactive shell in a platform's image, through the entry point,
    /// with the capabilities the scenarios use.
    Shell(shell::ShellArgs),
    /// Check the engine, binfmt_misc, emulators, disk, mirror and registry; print fixes.
    Doctor(info::DoctorArgs),
    /// The platform list, for a CI matrix.
    Matrix(info::MatrixArgs),
    /// Show how each engine runs each platform (natively, or through which
    /// emulator, and why) and its handlers; --install registers them.
    Emulators(info::EmulatorsArgs),
    /// Show or move the guix channel pin in channels/channels.scm.
    Pin(info::PinArgs),
    /// Remove every container the harness labelled and every image it tagged.
    Clean(info::CleanArgs),
    /// Publish the images a run proved: tarballs, SHA256SUMS, an OCI layout,
    /// and with --push a multi-platform image in a registry under a dated tag.
    Release(release::ReleaseArgs),
    /// Say what vouches for a release (its pinned digest, or a signature by a
    /// trusted key) without fetching its images; exit 5 when nothing does.
    Verify(verify::VerifyArgs),
    /// Rebuild a release's images from this checkout and its own base, every
    /// stage anew, and say whether they are the same bits (exit 1 with what
    /// differs when not).
    Rebuild(rebuild::RebuildArgs),
    /// Make a key pair for signing releases (PREFIX.key, PREFIX.pub).
    Keygen(keygen::KeygenArgs),
    /// Print shell completions (`harness completions bash > ~/.local/share/bash-completion/completions/harness`).
    Completions(completions::CompletionsArgs),
    /// Print the man page, or write every command's (`harness man --out ~/.local/share/man/man1`).
    Man(completions::ManArgs),
}

/// Where the image comes from instead of a build, and what vouches for it.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Release input")]
pub struct SourceArgs {
    /// Use this published image instead of building: a registry reference
    /// (REGISTRY/REPO:TAG, pulled per platform by digest) or a release
    /// directory (`harness release --dist`), vouched for by a pinned digest
    /// (REF@sha256:…, DIR@sha256:…) or a trusted signature, else exit 5.
    #[arg(long, value_name = "REF|DIR", conflicts_with = "from", value_parser = crate::release::source::parse_arg)]
    pub image: Option<crate::release::source::Source>,
    /// Start from a release (REGISTRY/REPO:vYYYYMMDD, or its --dist
    /// directory, either @sha256:… pinned): a platform whose inputs did not
    /// change reuses the release's image (verified, no build); one whose
    /// inputs changed builds on its base and layers. An unreachable or
    /// unverified release means a build, said so (--require-verified: exit 5).
    #[arg(long, value_name = "REF|DIR", env = "GUIX_MATRIX_FROM", value_parser = crate::release::source::parse_arg)]
    pub from: Option<crate::release::source::Source>,
    #[command(flatten)]
    pub trust: TrustArgs,
}

impl SourceArgs {
    /// Sets the run's source and trusted keys, checking up front what must be vouched for.
    pub async fn apply(&self, ctx: &Context, options: &mut Options) -> Result<(), Error> {
        options.release.image.clone_from(&self.image);
        options.release.from.clone_from(&self.from);
        self.trust.apply(ctx, options).await
    }
}

/// Which keys vouch for a release besides a pinned digest: the checkout's
/// trust/*.pub and these.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Release input")]
pub struct TrustKeys {
    /// Trust releases signed by this public key (PEM) too; repeatable. The
    /// checkout's trust/*.pub are always trusted.
    #[arg(
        long = "trust-key",
        value_name = "FILE",
        env = "GUIX_MATRIX_TRUST_KEY",
        value_delimiter = ','
    )]
    pub keys: Vec<PathBuf>,
}

impl TrustKeys {
    /// The trusted keys (checked now: a bad key file is a usage error).
    pub fn load(&self, ctx: &Context) -> Result<crate::release::trust::Keys, Error> {
        Ok(crate::release::trust::Keys::load(
            &ctx.checkout.trust(),
            &self.keys,
        )?)
    }
}

/// Which releases are taken: those vouched for by a pinned digest
/// (`DIR@sha256:…`, `REF@sha256:…`) or signed by a trusted key.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Release input")]
pub struct TrustArgs {
    #[command(flatten)]
    pub keys: TrustKeys,
    /// An unverified --from release is an error (exit 5) instead of a build.
    #[arg(long, env = "GUIX_MATRIX_REQUIRE_VERIFIED", value_parser = clap::builder::BoolishValueParser::new())]
    pub require_verified: bool,
    /// Start from a --from release older than the one this engine's images
    /// came from (refused otherwise, exit 4: no rollback).
    #[arg(long, env = "GUIX_MATRIX_ALLOW_OLDER", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_older: bool,
}

impl TrustArgs {
    /// Sets the trusted keys, and opens the release once, up front, for
    /// every engine of the run: one that must be vouched for (an --image
    /// release, or a --from release with --require-verified) and is not
    /// stops the command before any leg (exit 5).
    pub async fn apply(&self, ctx: &Context, options: &mut Options) -> Result<(), Error> {
        options.release.keys = self.keys.load(ctx)?;
        options.release.require_verified = self.require_verified;
        options.release.allow_older = self.allow_older;
        let must = options.release.image.is_some()
            || (options.release.from.is_some() && self.require_verified);
        let input = options.release_input().await?;
        if let (true, Some(release)) = (must, input.release()) {
            println!("release {}: {}", release.source, release.vouched.by);
        }
        Ok(())
    }
}

/// Whether the legs use the internet, and how the pull stage pulls.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Network")]
pub struct PullArgs {
    /// Use the internet: the pull stage runs the real `guix pull` to the pin
    /// (the image checked and released is the pulled one), and the legs that
    /// need the network run; without it they say "skipped: offline".
    #[arg(long, env = "GUIX_MATRIX_ONLINE", value_parser = clap::builder::BoolishValueParser::new())]
    pub online: bool,
    /// Drive the pull stage offline with the stand-in for `guix pull`'s
    /// network part (fixtures/stand-in-guix.sh), for tests: the image is
    /// labelled as pulled by the stand-in, which `release` never ships as pulled.
    #[arg(long, conflicts_with = "online")]
    pub stand_in_pull: bool,
}

impl PullArgs {
    /// Sets the run's network use and pull stage.
    pub fn apply(&self, options: &mut Options) {
        options.pull = if self.online {
            crate::pull::Want::Pull(crate::pull::By::GuixPull)
        } else if self.stand_in_pull {
            crate::pull::Want::Pull(crate::pull::By::StandIn)
        } else {
            crate::pull::Want::offline()
        };
    }
}

/// What every command starts from: the checkout, its matrix, the options.
pub struct Context {
    pub checkout: Checkout,
    pub matrix: Matrix,
    pub options: Options,
    /// Unix seconds when this process started (what an interrupt cleans up after).
    pub started: i64,
}

impl Workspace {
    /// The checkout, its matrix and default options, for a command that calls no engine.
    pub fn context(&self) -> Result<Context, Error> {
        let checkout = match &self.root {
            Some(root) => Checkout::at(root)?,
            None => Checkout::find()?,
        };
        let path = self.matrix.clone().unwrap_or_else(|| checkout.matrix());
        let matrix = Matrix::load(path)?;
        let options = Options::new(checkout.clone());
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Ok(Context {
            checkout,
            matrix,
            options,
            started,
        })
    }

    /// The context with the engine every command's calls go to.
    pub fn with_engine(&self, engine: &EngineArgs) -> Result<Context, Error> {
        let mut ctx = self.context()?;
        ctx.options.engine = engine.default_url()?;
        Ok(ctx)
    }

    /// The context of a command that builds images: its engine and base source.
    pub fn with_build(&self, build: &BuildArgs) -> Result<Context, Error> {
        let mut ctx = self.with_engine(&build.engine)?;
        ctx.options.allow_pull = !build.build_base;
        Ok(ctx)
    }
}

impl EngineArgs {
    /// The one engine not tied to a platform: given once, or found as the docker CLI finds it.
    pub fn default_url(&self) -> Result<String, Error> {
        let defaults: Vec<&String> = self
            .engines
            .iter()
            .filter(|e| e.platform.is_none())
            .map(|e| &e.url)
            .collect();
        match defaults.as_slice() {
            [] => Ok(crate::engine::Engine::resolve_default()?),
            [url] => {
                crate::engine::Address::parse(url)?;
                Ok((*url).clone())
            }
            [first, second, ..] => Err(crate::engine::EngineError::Twice {
                platform: "every command".into(),
                first: (*first).clone(),
                second: (*second).clone(),
            }
            .into()),
        }
    }
}

impl Global {
    /// Colour as asked; else as CARGO_TERM_COLOR says (what CI sets for
    /// cargo); else on a terminal unless NO_COLOR says otherwise.
    pub fn ansi(&self) -> bool {
        use std::io::IsTerminal;
        let cargo = std::env::var("CARGO_TERM_COLOR").ok();
        let color = match (self.color, cargo.as_deref()) {
            (Color::Auto, Some("always")) => Color::Always,
            (Color::Auto, Some("never")) => Color::Never,
            (asked, _) => asked,
        };
        match color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty())
            }
        }
    }

    fn init_log(&self) {
        let default = match (self.quiet, self.verbose) {
            (true, _) => "harness=warn",
            (_, 0) => "harness=info",
            (_, 1) => "harness=debug",
            _ => "harness=trace",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_env("GUIX_MATRIX_LOG")
            .unwrap_or_else(|_| default.into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(self.ansi())
            .with_target(false)
            .try_init();
    }
}

impl Command {
    /// Builds what the command needs (nothing, the checkout, or the checkout
    /// and an engine) from its own options, and runs it.
    async fn exec(self, global: &Global) -> Result<Exit, Error> {
        match self {
            Command::Run(args) => {
                let ctx = args.workspace.with_build(&args.build)?;
                args.exec(&ctx, global).await
            }
            Command::Repro(args) => {
                let ctx = args.workspace.with_build(&args.build)?;
                args.exec(&ctx, global).await
            }
            Command::Shell(args) => {
                let ctx = args.workspace.with_build(&args.build)?;
                args.exec(&ctx).await
            }
            Command::Doctor(args) => {
                let ctx = args.workspace.with_engine(&args.engine)?;
                info::doctor(&ctx, &args).await
            }
            Command::Matrix(args) => {
                let ctx = args.workspace.context()?;
                args.exec(&ctx)
            }
            Command::Emulators(args) => {
                let ctx = args.workspace.with_engine(&args.engine)?;
                args.exec(&ctx).await
            }
            Command::Pin(args) => {
                let ctx = args.workspace.context()?;
                args.exec(&ctx).await
            }
            Command::Clean(args) => {
                let ctx = args.workspace.with_engine(&args.engine)?;
                args.exec(&ctx).await
            }
            Command::Release(args) => {
                let ctx = args.workspace.with_engine(&args.engine)?;
                args.exec(&ctx).await
            }
            Command::Verify(args) => {
                let ctx = args.workspace.context()?;
                args.exec(&ctx).await
            }
            Command::Rebuild(args) => {
                let ctx = args.workspace.with_build(&args.build)?;
                args.exec(&ctx).await
            }
            Command::Keygen(args) => args.exec(),
            Command::Completions(args) => args.exec(),
            Command::Man(args) => args.exec(),
        }
    }
}

/// Parses the command line, runs the command, and says what went wrong: the
/// error, its fix, and an exit code from the contract above.
pub async fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse_from(move_old_global_options(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    cli.global.init_log();
    match cli.command.exec(&cli.global).await {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {}", e.report());
            e.exit().into()
        }
    }
}

/// Waits for SIGINT or SIGTERM (a cancelled CI job, `timeout`, `docker stop`)
/// and returns its number.
pub async fn interrupt() -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => 2,
        Some(_) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => 15,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn help_shows_the_exit_codes_and_every_variable() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "130",
            "  4    refused: `release` found an image",
            "GUIX_MATRIX_ROOT",
            "GUIX_MATRIX_FILE",
            "GUIX_MATRIX_BUILD_BASE",
            "GUIX_MATRIX_ENGINES",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
            "GITHUB_STEP_SUMMARY",
        ] {
            assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
        }
    }

    #[test]
    fn usage_errors_exit_2() {
        let e = Cli::try_parse_from(["harness", "run", "--scenario", "nope"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = Cli::try_parse_from(["harness", "frobnicate"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn boolean_variables_take_the_usual_spellings() {
        for (value, want) in [
            ("1", true),
            ("true", true),
            ("yes", true),
            ("0", false),
            ("false", false),
            ("no", false),
        ] {
            std::env::set_var("GUIX_MATRIX_ONLINE", value);
            let cli = Cli::try_parse_from(["harness", "run"]).unwrap();
            std::env::remove_var("GUIX_MATRIX_ONLINE");
            let Command::Run(run) = cli.command else {
                panic!("run")
            };
            assert_eq!(run.pull.online, want, "GUIX_MATRIX_ONLINE={value}");
        }
    }

    /// The engines a parsed command line gives the command that takes them.
    fn engines_of(cli: &Cli) -> Vec<crate::fleet::EngineArg> {
        match &cli.command {
            Command::Run(a) => a.build.engine.engines.clone(),
            Command::Repro(a) => a.build.engine.engines.clone(),
            Command::Shell(a) => a.build.engine.engines.clone(),
            Command::Doctor(a) => a.engine.engines.clone(),
            Command::Emulators(a) => a.engine.engines.clone(),
            Command::Clean(a) => a.engine.engines.clone(),
            Command::Release(a) => a.engine.engines.clone(),
            _ => vec![],
        }
    }

    #[test]
    fn engines_come_from_repeated_flags_or_one_variable() {
        let cli = Cli::try_parse_from([
            "harness",
            "run",
            "--engine",
            "linux/arm64/v8=tcp://arm:2376",
            "--engine",
            "riscv64=unix:///run/rv.sock",
        ])
        .unwrap();
        let urls: Vec<_> = engines_of(&cli).into_iter().map(|e| e.url).collect();
        assert_eq!(urls, ["tcp://arm:2376", "unix:///run/rv.sock"]);
        let e = Cli::try_parse_from(["harness", "repro", "--platform", "386", "--engine", "386"])
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("is not PLATFORM=URL or URL"), "{e}");
        // One engine for every command that calls one, release and clean included.
        for cmd in ["release", "clean", "doctor", "shell", "emulators"] {
            let cli = Cli::try_parse_from(["harness", cmd, "--engine", "tcp://other:2376"])
                .or_else(|_| {
                    Cli::try_parse_from([
                        "harness",
                        cmd,
                        "--platform",
                        "amd64",
                        "--engine",
                        "tcp://other:2376",
                    ])
                })
                .unwrap_or_else(|e| panic!("{cmd}: {e}"));
            assert_eq!(engines_of(&cli)[0].platform, None, "{cmd}");
        }
    }

    #[test]
    fn commands_take_only_the_options_they_use() {
        for (cmd, option) in [
            ("keygen", "--engine"),
            ("keygen", "--root"),
            ("completions", "--matrix"),
            ("man", "--build-base"),
            ("verify", "--require-verified"),
            ("verify", "--allow-older"),
            ("verify", "--engine"),
            ("pin", "--engine"),
            ("matrix", "--build-base"),
            ("clean", "--build-base"),
        ] {
            use clap::CommandFactory;
            let mut top = Cli::command();
            let sub = top.find_subcommand_mut(cmd).expect(cmd);
            let help = sub.render_long_help().to_string();
            assert!(
                !help.contains(option),
                "`{cmd} --help` offers {option}:\n{help}"
            );
        }
    }

    #[test]
    fn options_before_the_command_are_moved_after_it_for_one_release() {
        let line = |args: &[&str]| -> Vec<String> {
            let os = args.iter().map(std::ffi::OsString::from).collect();
            move_old_global_options(os)
                .into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            line(&[
                "harness",
                "-v",
                "--engine",
                "tcp://e:2376",
                "--root=/r",
                "run",
                "--platform",
                "amd64"
            ]),
            [
                "harness",
                "-v",
                "run",
                "--engine",
                "tcp://e:2376",
                "--root=/r",
                "--platform",
                "amd64"
            ]
        );
        assert_eq!(
            line(&["harness", "--color", "never", "--build-base", "repro"]),
            ["harness", "--color", "never", "repro", "--build-base"]
        );
        // Options after the command are left where they are.
        assert_eq!(
            line(&["harness", "run", "--engine", "x"]),
            ["harness", "run", "--engine", "x"]
        );
    }
}
