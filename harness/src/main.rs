//! The `harness` command; everything it does lives in `harness::cli`.

fn main() -> std::process::ExitCode {
    // Output piped into `head` ends quietly, as it does for other Unix tools
    // (Rust ignores SIGPIPE and would panic on the failed write).
    // SAFETY: called before any thread writes; SIG_DFL is a valid handler.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
    // Old variable names, before any thread starts.
    harness::cli::read_renamed_variables();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    let code = runtime.block_on(async {
        let code = harness::cli::main().await;
        // The run's leases on shared engines, whatever ended the command.
        harness::engine::lease::give_back_all().await;
        code
    });
    // A blocking read still under way (hashing a release when SIGTERM came)
    // must not hold the exit: dropping the runtime would wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}
