//! Retries with exponential back-off for the steps that touch the network.

use backon::{ExponentialBuilder, Retryable};
use std::future::Future;
use std::time::Duration;

/// Runs `op` up to 4 times (1 s, 2 s, 4 s apart) while `transient` says the
/// error may go away; each retry is logged with the step's name.
pub async fn network<T, E, F, Fut>(
    step: &str,
    transient: impl FnMut(&E) -> bool,
    op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(8))
        .with_max_times(3);
    op.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(transient)
        .notify(|e, wait| tracing::warn!("{step}: {e}; retrying in {wait:.0?}"))
        .await
}
