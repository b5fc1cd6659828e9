//! `harness completions` and `harness man`: shell completions and man pages generated from the CLI definition itself.

use super::Cli;
use crate::error::{Error, Exit};
use clap::CommandFactory;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

impl CompletionsArgs {
    pub fn exec(self) -> Result<Exit, Error> {
        let mut cmd = Cli::command();
        clap_complete::generate(self.shell, &mut cmd, "harness", &mut std::io::stdout());
        Ok(Exit::Success)
    }
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write harness.1 and one page per command (harness-run.1, …) into
    /// this directory instead of printing harness.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

impl ManArgs {
    pub fn exec(self) -> Result<Exit, Error> {
        let cmd = Cli::command();
        let io = |path: PathBuf| move |source| Error::Output { path, source };
        match &self.out {
            None => clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map_err(io("stdout".into()))?,
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(io(dir.clone()))?;
                clap_mangen::generate_to(cmd, dir).map_err(io(dir.clone()))?;
                println!("man pages in {}", dir.display());
            }
        }
        Ok(Exit::Success)
    }
}
