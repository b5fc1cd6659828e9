//! `harness shell`: a shell (or one command) in a platform's image, through the docker CLI for a real terminal.

use super::Context;
use crate::engine::run::RunSpec;
use crate::error::{Error, Exit};
use crate::pipeline::Pipeline;

#[derive(Debug, clap::Args)]
pub struct ShellArgs {
    /// The platform whose image to enter, by any name of its matrix.toml
    /// row (linux/riscv64, riscv64…).
    #[arg(long, value_name = "PLATFORM", help_heading = "Selection")]
    pub platform: String,
    /// Put Guix's cache on tmpfs (default: what matrix.toml says for the platform).
    #[arg(long, value_name = "BOOL", help_heading = "Selection")]
    pub tmpfs: Option<bool>,
    #[command(flatten)]
    pub source: super::SourceArgs,
    /// The command (default: bash, with /entry-point.sh available).
    #[arg(
        trailing_var_arg = true,
        value_name = "COMMAND",
        help_heading = "Arguments"
    )]
    pub command: Vec<String>,
    #[command(flatten)]
    pub build: super::BuildArgs,
    #[command(flatten)]
    pub workspace: super::Workspace,
}

impl ShellArgs {
    pub async fn exec(self, ctx: &Context) -> Result<Exit, Error> {
        let mut options = ctx.options.clone();
        self.source.apply(ctx, &mut options).await?;
        let h = Pipeline::new(ctx.matrix.clone(), options).await?;
        let p = h.matrix.find(&self.platform)?.clone();
        let prepared = h.prepare(&p).await?;
        let mut spec = RunSpec::new(prepared.image.tag.clone(), "shell").platform(&p.docker);
        spec.network_none = false;
        if self.tmpfs.unwrap_or(prepared.placement.cache_tmpfs) {
            spec = spec.tmpfs("/root/.cache/guix", "rw,exec,size=2g");
        }
        spec.cmd = if self.command.is_empty() {
            vec!["bash".into()]
        } else {
            self.command
        };
        // The shell runs on the engine the image was prepared on.
        let mut args = h.engine.cli_flags();
        args.extend(spec.docker_args());
        eprintln!("docker {}", args.join(" "));
        let status = std::process::Command::new("docker")
            .args(&args)
            .status()
            .map_err(Error::DockerCli)?;
        // The command's own exit code, as `docker run` gives it.
        Ok(match status.code() {
            Some(0) => Exit::Success,
            Some(code) => Exit::Command(code.clamp(1, 255) as u8),
            None => Exit::LegsFailed,
        })
    }
}
