//! What goes into a release, decided in one place: the proved images with their bases, the emulator helper of each proved platform the engine has, the readdir() probes of this tree, and the index's annotations.

use super::archive::{probes_of, Probes};
use super::{Proved, ReleaseError};
use crate::engine::{build, run, Engine};
use crate::matrix::Matrix;
use crate::recipe;
use std::collections::BTreeMap;
use std::path::Path;

/// What the release says of itself beyond its images.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    /// The release tag (`v20261204`).
    pub tag: &'a str,
    /// org.opencontainers.image.source, when given.
    pub source: Option<&'a str>,
    /// org.opencontainers.image.revision, when given.
    pub revision: Option<&'a str>,
}

/// What ships beside the proved images.
#[derive(Debug, Default)]
pub struct Contents {
    /// The index's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The readdir() probes (their key, the files), when the engine has this tree's.
    pub probes: Option<(String, Probes)>,
}

/// Decides what ships: each proved platform's helper (set on `proved`),
/// the probes, and the annotations.
pub async fn decide(
    engine: &Engine,
    matrix: &Matrix,
    root: &Path,
    proved: &mut [Proved],
    meta: &Meta<'_>,
) -> Result<Contents, ReleaseError> {
    helpers(engine, matrix, root, proved).await?;
    Ok(Contents {
        annotations: annotations(meta, proved, root),
        probes: probes(engine, matrix, root).await?,
    })
}

/// The readdir() probes of this tree, when the engine has them (the run
/// that proved the images, or a prove job on a runner of any architecture,
/// made them for its tmpfs and chroot checks): shipped with the release,
/// under the key that says what they are whatever machine built them, so
/// that a repro from it needs no probe image.
async fn probes(
    engine: &Engine,
    matrix: &Matrix,
    root: &Path,
) -> Result<Option<(String, Probes)>, ReleaseError> {
    for p in &matrix.platforms {
        let spec = recipe::probe_spec(matrix, root, p);
        let want = build::inputs(&spec)?.hash;
        if engine.up_to_date(&spec.tag, &want).await?.is_none() {
            continue;
        }
        let tar = run::copy_out(engine, &spec.tag, "/probes").await?;
        let probes = probes_of(tar.as_slice()).map_err(|source| ReleaseError::Io {
            path: format!("{}:/probes", spec.tag).into(),
            source,
        })?;
        return Ok(Some((recipe::probes_key(matrix, root, p)?, probes)));
    }
    Ok(None)
}

/// The emulator helper of this tree for each proved platform whose engines
/// may run the legs (the engine's own, or one a prove job on a runner of
/// that architecture made and handed on): shipped with that platform's
/// image, so that a repro from the release on an empty engine of that
/// architecture registers emulators at once.
async fn helpers(
    engine: &Engine,
    matrix: &Matrix,
    root: &Path,
    proved: &mut [Proved],
) -> Result<(), ReleaseError> {
    for p in proved.iter_mut() {
        let spec = recipe::helper_spec(matrix, root, &p.platform);
        let want = build::inputs(&spec)?.hash;
        if engine.up_to_date(&spec.tag, &want).await?.is_some() {
            p.helper = Some(spec.tag);
        }
    }
    Ok(())
}

/// The standard OCI annotations of the index, and whether its images
/// are the pulled Guix of the pin.
fn annotations(meta: &Meta<'_>, proved: &[Proved], root: &Path) -> BTreeMap<String, String> {
    let tag = meta.tag;
    let mut a = BTreeMap::from([
        (
            "org.opencontainers.image.title".to_string(),
            "guix-matrix".to_string(),
        ),
        (
            "org.opencontainers.image.version".to_string(),
            tag.to_string(),
        ),
        (
            "org.opencontainers.image.licenses".to_string(),
            "Apache-2.0".to_string(),
        ),
        (
            "org.opencontainers.image.description".to_string(),
            "GNU Guix for CI/CD on six platforms".to_string(),
        ),
        (
            "org.opencontainers.image.created".to_string(),
            created(root),
        ),
    ]);
    if let Some(s) = meta.source {
        a.insert("org.opencontainers.image.source".into(), s.to_string());
    }
    if let Some(r) = meta.revision {
        a.insert("org.opencontainers.image.revision".into(), r.to_string());
    }
    let unpulled: Vec<&str> = proved
        .iter()
        .filter(|p| p.pulled.is_none())
        .map(|p| p.platform.docker.as_str())
        .collect();
    let pulled = match (
        unpulled.is_empty(),
        proved.first().and_then(|p| p.pulled.as_ref()),
    ) {
        (true, Some(p)) => format!("guix pull {}", p.commit),
        _ => format!(
            "no: {} shipped unpulled (release --unpulled)",
            unpulled.join(", ")
        ),
    };
    a.insert(crate::names::LABEL_PULLED.into(), pulled);
    a
}

/// When the release's content was made, RFC 3339 (UTC, seconds):
/// SOURCE_DATE_EPOCH when set, else the checkout's commit time, else now —
/// so the same images released again make the same index (a no-op push).
fn created(root: &Path) -> String {
    let commit_time = || {
        let out = std::process::Command::new("git")
            .args([
                "-C",
                &root.display().to_string(),
                "log",
                "-1",
                "--format=%ct",
            ])
            .output()
            .ok()?;
        String::from_utf8(out.stdout)
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    };
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .or_else(commit_time)
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    let day = super::dated_tag(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    let (y, m, d) = (&day[1..5], &day[5..7], &day[7..9]);
    let t = secs % 86_400;
    format!(
        "{y}-{m}-{d}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}
