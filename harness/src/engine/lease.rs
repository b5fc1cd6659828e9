//! Runs that share an engine: each run holds a lease on the platforms it works on (a labelled volume it renews while it lives), its containers name the run, and `clean` leaves alone what a live run holds.

use super::{timeout, Engine, EngineError};
use crate::names::{LABEL_LEASE, LABEL_LEASE_EXPIRES, LABEL_RUN};
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

/// How long a lease lasts without renewal (a run renews it a third of the way).
pub const TTL: Duration = Duration::from_secs(600);

/// This process as a run: `HOST:PID:STARTED` (STARTED in unix seconds).
pub fn this_run() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}:{}:{}", std::process::id(), now())
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A run's lease as the engine holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The volume that is the lease.
    pub volume: String,
    /// `HOST:PID:STARTED`.
    pub run: String,
    /// The platform slugs it holds (`amd64`, `arm-v7`).
    pub slugs: Vec<String>,
    /// Unix seconds after which it is dead unless renewed.
    pub expires: i64,
}

impl Lease {
    /// Whether its run still lives: on this host, its process (the same pid,
    /// started no later than the run says); elsewhere, an unexpired lease.
    pub fn live(&self) -> bool {
        let mut parts = self.run.rsplitn(3, ':');
        let (started, pid, host) = (parts.next(), parts.next(), parts.next());
        let here = this_run().rsplitn(3, ':').nth(2);
        match (host, pid.and_then(|p| p.parse::<i32>().ok()), started) {
            (Some(h), Some(pid), Some(_)) if Some(h) == here => process_lives(pid),
            _ => self.expires > now(),
        }
    }
}

/// Whether process `pid` exists on this host.
fn process_lives(pid: i32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

impl Engine {
    /// Takes (or renews, as generation `n`) this run's lease on `slugs`;
    /// the previous generation's volume, if any, is removed after.
    pub async fn lease(&self, slugs: &[String], n: u32) -> Result<String, EngineError> {
        let run = this_run();
        let name = format!(
            "guix-matrix-lease-{}-{n}",
            run.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        );
        let labels = HashMap::from([
            (LABEL_RUN.to_string(), run.to_string()),
            (LABEL_LEASE.to_string(), slugs.join(",")),
            (
                LABEL_LEASE_EXPIRES.to_string(),
                (now() + TTL.as_secs() as i64).to_string(),
            ),
        ]);
        let request = VolumeCreateRequest {
            name: Some(name.clone()),
            labels: Some(labels),
            ..Default::default()
        };
        timeout(
            "take the run's lease",
            Duration::from_secs(30),
            self.docker.create_volume(request),
        )
        .await?
        .map_err(EngineError::api("take the run's lease"))?;
        if n > 0 {
            let old = name.replace(&format!("-{n}"), &format!("-{}", n - 1));
            self.drop_lease(&old).await;
        }
        Ok(name)
    }

    /// Removes a lease volume; one already gone is fine.
    pub async fn drop_lease(&self, volume: &str) {
        let opts = RemoveVolumeOptionsBuilder::default().force(true).build();
        if let Err(e) = self.docker.remove_volume(volume, Some(opts)).await {
            if !matches!(
                e,
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                }
            ) {
                tracing::warn!("could not remove the lease {volume}: {e}");
            }
        }
    }

    /// Every run's lease on this engine.
    pub async fn leases(&self) -> Result<Vec<Lease>, EngineError> {
        let filter = HashMap::from([("label".to_string(), vec![LABEL_LEASE.to_string()])]);
        let opts = ListVolumesOptionsBuilder::default()
            .filters(&filter)
            .build();
        let volumes = timeout(
            "list leases",
            Duration::from_secs(30),
            self.docker.list_volumes(Some(opts)),
        )
        .await?
        .map_err(EngineError::api("list leases"))?
        .volumes
        .unwrap_or_default();
        Ok(volumes
            .into_iter()
            .map(|v| {
                let label = |k: &str| v.labels.get(k).cloned().unwrap_or_default();
                Lease {
                    volume: v.name.clone(),
                    run: label(LABEL_RUN),
                    slugs: label(LABEL_LEASE)
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                    expires: label(LABEL_LEASE_EXPIRES).parse().unwrap_or(0),
                }
            })
            .collect())
    }
}

/// A run's hold on an engine: taken at the start, renewed while the run
/// lives, given back at its end (or by `clean` once its process is gone).
pub struct Held {
    engine: Engine,
    slugs: Vec<String>,
    volume: tokio::sync::Mutex<String>,
    renewal: tokio::task::JoinHandle<()>,
}

impl Held {
    /// Takes the lease on `slugs` and starts renewing it (given back at the
    /// end of the command whatever happens: `give_back_all`).
    pub async fn take(
        engine: &Engine,
        slugs: Vec<String>,
    ) -> Result<std::sync::Arc<Held>, EngineError> {
        let volume = engine.lease(&slugs, 0).await?;
        let held = std::sync::Arc::new_cyclic(|weak: &std::sync::Weak<Held>| {
            let weak = weak.clone();
            let renewal = tokio::spawn(async move {
                let mut n = 0;
                loop {
                    tokio::time::sleep(TTL / 3).await;
                    let Some(held) = weak.upgrade() else { return };
                    n += 1;
                    match held.engine.lease(&held.slugs, n).await {
                        Ok(v) => *held.volume.lock().await = v,
                        Err(e) => tracing::warn!("could not renew the run's lease: {e}"),
                    }
                }
            });
            Held {
                engine: engine.clone(),
                slugs,
                volume: tokio::sync::Mutex::new(volume),
                renewal,
            }
        });
        HELD.lock().expect("leases").push(held.clone());
        Ok(held)
    }

    /// Gives the lease back.
    pub async fn give_back(&self) {
        self.renewal.abort();
        let volume = self.volume.lock().await.clone();
        self.engine.drop_lease(&volume).await;
    }
}

/// Every lease this process holds.
static HELD: std::sync::Mutex<Vec<std::sync::Arc<Held>>> = std::sync::Mutex::new(Vec::new());

/// Gives back every lease this process still holds: the end of a command,
/// on success, error or signal.
pub async fn give_back_all() {
    let held: Vec<_> = HELD.lock().expect("leases").drain(..).collect();
    for h in held {
        h.give_back().await;
    }
}
