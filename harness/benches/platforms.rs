//! Per-platform figures: warm prepare (content-hash check), and the time of
//! `guix --version` through the entry point (daemon start and stop included),
//! with the slowdown against native that it implies next to matrix.toml's.
//!
//!   cargo bench -p harness --bench platforms [-- PLATFORM...]
//! Needs an engine and prepared images (run `harness run` once first).

use harness::engine::run::{self, RunSpec};
use harness::pipeline::Pipeline;
use std::time::{Duration, Instant};

const ROUNDS: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let h = Pipeline::discover().await?;
    let platforms = h.matrix.select(&wanted)?;
    println!(
        "{:16} {:>12} {:>16} {:>10} {:>14}",
        "platform", "prepare(ms)", "guix --version", "slowdown", "matrix.toml"
    );
    let mut native: Option<Duration> = None;
    for p in platforms {
        let t = Instant::now();
        let prepared = h.prepare(&p).await?;
        let prepare = t.elapsed();
        let mut times = vec![];
        for _ in 0..ROUNDS {
            let spec = RunSpec::new(prepared.image.tag.clone(), "bench")
                .platform(&p.docker)
                .cmd(["guix", "--version"])
                .timeout(h.step_timeout(&prepared.placement));
            let out = run::run(&h.engine, &spec).await?;
            assert_eq!(out.exit_code, 0, "{}: {}", p.docker, out.tail(10));
            times.push(out.elapsed);
        }
        let m = median(times);
        let base = *native.get_or_insert(m);
        println!(
            "{:16} {:>12} {:>14.2}s {:>9.1}x {:>13.1}x",
            p.docker,
            prepare.as_millis(),
            m.as_secs_f64(),
            m.as_secs_f64() / base.as_secs_f64(),
            p.slowdown
        );
    }
    Ok(())
}
