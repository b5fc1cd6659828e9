//! The one way tests and benches drive `harness`: as a user types it, with no colour and no stdin.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `harness` binary under test (`Cli::new(env!("CARGO_BIN_EXE_harness"))`).
#[derive(Debug, Clone)]
pub struct Cli {
    bin: PathBuf,
}

impl Cli {
    /// The binary at `bin`.
    pub fn new(bin: impl AsRef<Path>) -> Cli {
        Cli {
            bin: bin.as_ref().to_path_buf(),
        }
    }

    /// `harness` as a command to add arguments, variables or pipes to:
    /// NO_COLOR set, stdin empty.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("NO_COLOR", "1").stdin(Stdio::null());
        cmd
    }

    /// `harness ARGS`, run to its end.
    pub fn output(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()))
    }
}

/// Everything a command printed, stdout then stderr.
pub fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
