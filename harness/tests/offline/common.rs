//! The engine-free tier's one way to drive the CLI.

/// `harness` as a command to add arguments, variables or pipes to.
pub fn command() -> std::process::Command {
    testkit::Cli::new(env!("CARGO_BIN_EXE_harness")).command()
}
