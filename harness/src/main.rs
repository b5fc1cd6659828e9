//! The `harness` command; everything it does lives in `harness::cli`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Output piped into `head` ends quietly, as it does for other Unix tools
    // (Rust ignores SIGPIPE and would panic on the failed write).
    // SAFETY: called before any thread writes; SIG_DFL is a valid handler.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
    harness::cli::main().await
}
