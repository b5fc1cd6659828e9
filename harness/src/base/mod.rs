//! Base images: a local one, else a pulled one, else one built offline from the Debian mirror.

use crate::engine::{timeout, Engine, EngineError, LocalImage};
use crate::matrix::{Defaults, Platform};
use crate::names::{LABEL_INPUTS, LABEL_MANAGED, LABEL_PLATFORM};
use crate::retry;

pub mod mirror;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tokio::sync::Mutex;

use crate::names::LABEL_ORIGIN;

/// Pulls of one multi-arch tag for several platforms must not interleave:
/// each pull moves the tag.
static PULL_LOCK: Mutex<()> = Mutex::const_new(());

/// Which of the three routes gave the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Already in the engine.
    Local,
    /// Pulled from a registry.
    Pulled,
    /// Built here with mmdebstrap from the Debian mirror and loaded.
    BuiltOffline,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Local => "local",
            Origin::Pulled => "pulled",
            Origin::BuiltOffline => "built offline from the Debian mirror",
        })
    }
}

/// A base image ready for `FROM`.
#[derive(Debug, Clone)]
pub struct Base {
    /// The reference to put in `FROM` (our per-platform tag).
    pub reference: String,
    pub id: String,
    pub origin: Origin,
    /// Where it came from, to trace and rebuild it: the registry digest of a
    /// pulled base, or the mmdebstrap inputs and rootfs digest of one built here.
    pub provenance: String,
    /// When its Debian packages were current (seconds since the epoch), if known.
    pub date: Option<i64>,
}

/// The provenance of a base image as the engine knows it.
pub fn provenance(img: &LocalImage) -> String {
    if let Some(digest) = img.repo_digests.first() {
        return digest.clone();
    }
    let rootfs = img.layers.first().map(String::as_str).unwrap_or("?");
    match img.labels.get(LABEL_ORIGIN).map(String::as_str) {
        Some("mmdebstrap") => format!(
            "mmdebstrap minbase of {} (rootfs {rootfs})",
            img.labels.get(LABEL_INPUTS).map_or("?", String::as_str)
        ),
        _ => format!(
            "local image {} without a registry digest (rootfs {rootfs})",
            img.id
        ),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{platform}: mmdebstrap is not installed")]
    NoMmdebstrap { platform: String },
    #[error("{platform}: mmdebstrap failed (exit {code}); last output:\n{tail}")]
    Mmdebstrap {
        platform: String,
        code: i32,
        tail: String,
        mirror: String,
    },
    #[error("{platform}: the Debian mirror's {url} expired on {until} (a frozen mirror): apt refuses it")]
    Expired {
        platform: String,
        url: String,
        until: String,
    },
    #[error("{platform}: {context}: {source}")]
    Io {
        platform: String,
        context: &'static str,
        source: std::io::Error,
    },
    #[error("{platform}: the engine loaded the base but reports architecture {found}, expected {expected}")]
    WrongArchitecture {
        platform: String,
        found: String,
        expected: String,
    },
}

impl BaseError {
    /// What to do about it.
    pub fn fix(&self) -> Option<String> {
        match self {
            BaseError::Engine(e) => e.fix(),
            BaseError::NoMmdebstrap { .. } => Some("apt-get install -y mmdebstrap arch-test (or `bash .ci/run`, which installs it)".into()),
            BaseError::Mmdebstrap { mirror, .. } => Some(format!("check the Debian mirror ({mirror}) is reachable; for a foreign architecture the emulator must be registered (`harness emulators --install`)")),
            BaseError::Expired { .. } => Some("point matrix.toml's `mirror` at a current Debian mirror; where a test needs this frozen one, set GUIX_MATRIX_ALLOW_EXPIRED_MIRROR=1 (apt then ignores Valid-Until)".into()),
            _ => None,
        }
    }
}

/// When a base's (or an image's) Debian packages were current: its base
/// date label, else (a base pulled from a registry) its `created`.
pub fn date(img: &LocalImage) -> Option<i64> {
    // A registry's base says when it was made; an image the harness built
    // is dated by its label only (its `created` is when it was built).
    let created = || {
        if img.labels.contains_key(LABEL_MANAGED) {
            return None;
        }
        img.created.filter(|&t| t > 0)
    };
    img.labels
        .get(crate::names::LABEL_BASE_DATE)
        .and_then(|d| mirror::from_rfc3339(d))
        .or_else(created)
}

/// Why a base of `date` must be rebuilt, given the mirror's Release date
/// now: it is older than `max_days` and Debian has changed the suite
/// since (else a rebuild would give the same packages). None: keep it.
pub fn too_old(date: i64, now: i64, max_days: u64, mirror: Option<i64>) -> Option<String> {
    let age = (now - date).max(0) / 86_400;
    if age <= max_days as i64 {
        return None;
    }
    match mirror {
        Some(m) if m > date => Some(format!(
            "its Debian packages are {age} days old (from {}; max_base_age_days = {max_days}) and the mirror has the suite of {}",
            mirror::day(date),
            mirror::day(m)
        )),
        _ => None,
    }
}

/// Why the base an image (or base) of `date` sits on must be rebuilt: older
/// than matrix.toml's `max_base_age_days`, with a newer suite on the mirror
/// (asked only then; an unreachable mirror keeps the base, said so).
pub async fn stale(defaults: &Defaults, date: Option<i64>) -> Option<String> {
    let date = date?;
    let now = mirror::now();
    too_old(date, now, defaults.max_base_age_days, Some(i64::MAX))?;
    match mirror::release(defaults, &defaults.suite).await {
        Ok(r) => too_old(date, now, defaults.max_base_age_days, Some(r.date)),
        Err(e) => {
            tracing::warn!("the base is older than max_base_age_days, but {e}: kept");
            None
        }
    }
}

fn matches(image: &LocalImage, platform: &Platform) -> bool {
    let oci = platform.oci();
    image.architecture == oci.architecture
        && match (&oci.variant, &image.variant) {
            (Some(want), Some(have)) => want == have,
            // arm64 images often omit v8; a variant is only required for arm/v*.
            (Some(want), None) => oci.architecture != "arm" || want.is_empty(),
            (None, _) => true,
        }
}

/// Finds, pulls or builds the base for `platform` (the matrix's suite).
pub async fn ensure(
    engine: &Engine,
    defaults: &Defaults,
    platform: &Platform,
    allow_pull: bool,
) -> Result<Base, BaseError> {
    ensure_tagged(
        engine,
        defaults,
        platform,
        allow_pull,
        crate::names::base(defaults, platform),
    )
    .await
}

/// The same for another Debian suite (`debian:<suite>-slim`, or mmdebstrap of it).
pub async fn ensure_suite(
    engine: &Engine,
    defaults: &Defaults,
    platform: &Platform,
    suite: &str,
    allow_pull: bool,
) -> Result<Base, BaseError> {
    if suite == defaults.suite {
        return ensure(engine, defaults, platform, allow_pull).await;
    }
    let tag = crate::names::base_of_suite(defaults, platform, suite);
    let defaults = Defaults {
        base_image: format!("debian:{suite}-slim"),
        suite: suite.to_string(),
        ..defaults.clone()
    };
    ensure_tagged(engine, &defaults, platform, allow_pull, tag).await
}

async fn ensure_tagged(
    engine: &Engine,
    defaults: &Defaults,
    platform: &Platform,
    allow_pull: bool,
    tag: String,
) -> Result<Base, BaseError> {
    let mut local = engine.local_image(&tag).await?;
    if let Some(why) = match &local {
        Some(img) => stale(defaults, date(img)).await,
        None => None,
    } {
        tracing::warn!(platform = %platform.docker, "base {tag}: {why}: rebuilt");
        local = None;
    }
    if let Some(img) = local {
        if matches(&img, platform) {
            let origin = match img.labels.get(LABEL_ORIGIN).map(String::as_str) {
                Some("mmdebstrap") => Origin::BuiltOffline,
                _ => Origin::Local,
            };
            tracing::info!(platform = %platform.docker, "base {tag}: already in the engine ({origin})");
            return Ok(Base {
                reference: tag,
                provenance: provenance(&img),
                date: date(&img),
                id: img.id,
                origin,
            });
        }
    }
    let fresh = |img: &LocalImage| too_old_now(defaults, img).is_none();
    if let Some(img) = engine.local_image(&defaults.base_image).await? {
        if matches(&img, platform) && fresh(&img) {
            engine.tag(&img.id, &tag).await?;
            tracing::info!(platform = %platform.docker, "base: local {} tagged {tag}", defaults.base_image);
            return Ok(Base {
                reference: tag,
                provenance: provenance(&img),
                date: date(&img),
                id: img.id,
                origin: Origin::Local,
            });
        }
    }
    if allow_pull {
        match pull(engine, defaults, platform, &tag).await {
            Ok(img) => {
                return Ok(Base {
                    reference: tag,
                    provenance: provenance(&img),
                    date: date(&img),
                    id: img.id,
                    origin: Origin::Pulled,
                })
            }
            Err(e) => {
                tracing::info!(platform = %platform.docker, "base: cannot pull {}: {e}; building it offline", defaults.base_image)
            }
        }
    }
    let img = build_offline(engine, defaults, platform, &tag).await?;
    Ok(Base {
        reference: tag,
        provenance: provenance(&img),
        date: date(&img),
        id: img.id,
        origin: Origin::BuiltOffline,
    })
}

/// Whether `img` is older than `max_base_age_days` at all (no mirror asked).
fn too_old_now(defaults: &Defaults, img: &LocalImage) -> Option<String> {
    let now = mirror::now();
    too_old(date(img)?, now, defaults.max_base_age_days, Some(i64::MAX))
}

/// Pulls `base_image` for the platform, retrying transient failures.
async fn pull(
    engine: &Engine,
    defaults: &Defaults,
    platform: &Platform,
    tag: &str,
) -> Result<LocalImage, EngineError> {
    let _guard = PULL_LOCK.lock().await;
    let step = format!("{}: pull {}", platform.docker, defaults.base_image);
    let limit = platform.timeout(Duration::from_secs(300));
    engine
        .pull(&defaults.base_image, &platform.docker, limit)
        .await?;
    let img = engine
        .local_image(&defaults.base_image)
        .await?
        .ok_or_else(|| EngineError::Lost {
            step: step.clone(),
            detail: "the pulled image is not in the engine".into(),
        })?;
    engine.tag(&img.id, tag).await?;
    Ok(img)
}

/// mmdebstrap minbase of the suite for the platform's Debian arch, loaded as a
/// docker-archive whose config carries the platform (so `--platform` finds it).
async fn build_offline(
    engine: &Engine,
    defaults: &Defaults,
    platform: &Platform,
    tag: &str,
) -> Result<LocalImage, BaseError> {
    let p = platform.docker.clone();
    let io = |context: &'static str| {
        let p = p.clone();
        move |source| BaseError::Io {
            platform: p,
            context,
            source,
        }
    };
    if crate::host::which("mmdebstrap").is_none() {
        return Err(BaseError::NoMmdebstrap { platform: p });
    }
    let dir = tempfile::Builder::new()
        .prefix("guix-matrix-base-")
        .tempdir()
        .map_err(io("create a temporary directory"))?;
    let rootfs = dir.path().join("rootfs.tar");
    let step = format!(
        "{p}: mmdebstrap {} {}",
        defaults.suite, platform.debian_arch
    );
    // The suite's Release date dates the base (its label, its config's
    // `created`) and is mmdebstrap's SOURCE_DATE_EPOCH: the same mirror
    // state gives the same root filesystem.
    let date = match mirror::release(defaults, &defaults.suite).await {
        Ok(r) => {
            let now = mirror::now();
            match r.valid_until {
                Some(until) if until < now && !defaults.expired_mirror_ok => {
                    return Err(BaseError::Expired {
                        platform: p,
                        url: mirror::release_url(defaults, &defaults.suite),
                        until: mirror::day(until),
                    })
                }
                _ => Some(r.date),
            }
        }
        Err(e) => {
            tracing::warn!(platform = %p, "base: {e}; its date is unknown");
            None
        }
    };
    let started = std::time::Instant::now();
    retry::network(
        &step,
        |e: &BaseError| matches!(e, BaseError::Mmdebstrap { .. }),
        || mmdebstrap(defaults, platform, &rootfs, date),
    )
    .await?;
    tracing::info!(platform = %p, "base: mmdebstrap done in {:.0?}", started.elapsed());

    let archive = dir.path().join("image.tar");
    let (p2, rootfs2, archive2, tag2) =
        (p.clone(), rootfs.clone(), archive.clone(), tag.to_string());
    let defaults2 = defaults.clone();
    let platform2 = platform.clone();
    tokio::task::spawn_blocking(move || {
        write_archive(&defaults2, &platform2, &rootfs2, &archive2, &tag2, date)
    })
    .await
    .expect("archive task")
    .map_err(|source| BaseError::Io {
        platform: p2,
        context: "write the docker-archive",
        source,
    })?;
    std::fs::remove_file(&rootfs).ok();

    let file = tokio::fs::File::open(&archive)
        .await
        .map_err(io("open the docker-archive"))?;
    let body = tokio_util::io::ReaderStream::new(file);
    let load_step = format!("{p}: load base image");
    engine
        .load(&load_step, body, Duration::from_secs(300))
        .await?;
    let img = engine
        .local_image(tag)
        .await?
        .ok_or_else(|| BaseError::WrongArchitecture {
            platform: p.clone(),
            found: "nothing (the tag is missing after load)".into(),
            expected: platform.docker.clone(),
        })?;
    if !matches(&img, platform) {
        return Err(BaseError::WrongArchitecture {
            platform: p,
            found: format!("{}/{}", img.architecture, img.variant.unwrap_or_default()),
            expected: platform.docker.clone(),
        });
    }
    tracing::info!(platform = %platform.docker, "base: built offline and loaded as {tag}");
    Ok(img)
}

async fn mmdebstrap(
    defaults: &Defaults,
    platform: &Platform,
    out: &Path,
    date: Option<i64>,
) -> Result<(), BaseError> {
    let mut cmd = tokio::process::Command::new("mmdebstrap");
    if let Some(d) = date {
        cmd.env("SOURCE_DATE_EPOCH", d.to_string());
    }
    if defaults.expired_mirror_ok {
        cmd.arg("--aptopt=Acquire::Check-Valid-Until \"false\"");
    }
    cmd.args([
        "--variant=minbase",
        &format!("--arch={}", platform.debian_arch),
        "--aptopt=Acquire::Retries \"5\"",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--format=tar",
        &defaults.suite,
    ])
    .arg(out)
    .arg(&defaults.mirror)
    .kill_on_drop(true)
    .stdin(std::process::Stdio::null());
    let limit = platform.timeout(Duration::from_secs(defaults.step_timeout_secs));
    let step = format!("{}: mmdebstrap", platform.docker);
    let output = timeout(&step, limit, cmd.output())
        .await?
        .map_err(|source| BaseError::Io {
            platform: platform.docker.clone(),
            context: "run mmdebstrap",
            source,
        })?;
    if !output.status.success() {
        let text = String::from_utf8_lossy(&output.stderr);
        return Err(BaseError::Mmdebstrap {
            platform: platform.docker.clone(),
            code: output.status.code().unwrap_or(-1),
            tail: crate::text::tail_lines(&text, 15),
            mirror: defaults.mirror.clone(),
        });
    }
    Ok(())
}

/// Writes a docker-archive (manifest.json, config, one layer) around `rootfs`.
fn write_archive(
    defaults: &Defaults,
    platform: &Platform,
    rootfs: &Path,
    archive: &Path,
    tag: &str,
    date: Option<i64>,
) -> std::io::Result<()> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(rootfs)?, &mut hasher)?;
    let diff_id = hex::encode(hasher.finalize());
    let oci = platform.oci();
    let inputs = format!(
        "{} {} {}",
        defaults.mirror, defaults.suite, platform.debian_arch
    );
    let created = mirror::rfc3339(date.unwrap_or(0));
    let mut config = serde_json::json!({
        "architecture": oci.architecture,
        "os": oci.os,
        "created": created,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["bash"],
            "Labels": {
                LABEL_MANAGED: "true",
                LABEL_PLATFORM: platform.docker,
                LABEL_ORIGIN: "mmdebstrap",
                LABEL_INPUTS: inputs,
            }
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created": created, "created_by": format!("mmdebstrap --variant=minbase --arch={} {} {}", platform.debian_arch, defaults.suite, defaults.mirror)}],
    });
    if let Some(v) = oci.variant {
        config["variant"] = serde_json::Value::String(v);
    }
    if date.is_some() {
        config["config"]["Labels"][crate::names::LABEL_BASE_DATE] = created.clone().into();
    }
    let config_bytes = serde_json::to_vec(&config)?;
    let config_name = format!("{}.json", hex::encode(Sha256::digest(&config_bytes)));
    let layer_name = format!("{diff_id}/layer.tar");
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": [layer_name],
    }]))?;

    let mut out = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(archive)?));
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.append_data(&mut h, name, data)
    };
    add("manifest.json", &manifest)?;
    add(&config_name, &config_bytes)?;
    out.append_path_with_name(rootfs, &layer_name)?;
    out.into_inner()?.flush()
}

#[cfg(test)]
mod age_tests {
    use super::too_old;

    const DAY: i64 = 86_400;

    /// Older than the limit and the mirror is newer: rebuilt, saying both
    /// dates; within the limit, or nothing newer on the mirror: kept.
    #[test]
    fn a_base_is_too_old_only_past_the_limit_with_a_newer_suite() {
        let base = 1_800_000_000;
        let now = base + 40 * DAY;
        let why = too_old(base, now, 30, Some(base + 5 * DAY)).unwrap();
        assert!(why.contains("40 days old"), "{why}");
        assert!(why.contains("max_base_age_days = 30"), "{why}");
        assert_eq!(too_old(base, now, 45, Some(now)), None);
        assert_eq!(too_old(base, now, 30, Some(base)), None);
        assert_eq!(too_old(base, now, 30, None), None);
    }
}
