//! The `harness` command; everything it does lives in `harness::cli`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    harness::cli::main().await
}
