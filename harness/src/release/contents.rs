//! What goes into a release, decided in one place: the proved images with their bases, the emulator helpers and readdir() probes the proving runs used (by image ID, from their reports), and the index's annotations.

use super::archive::{probes_of, Probes};
use super::{Proved, ReleaseError};
use crate::engine::{build, run, Engine};
use crate::matrix::Matrix;
use crate::recipe;
use crate::record::{Tool, ToolRole};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// The readdir() probes (their key, the files), when the run used this tree's.
    pub probes: Option<(String, Probes)>,
    /// What the engine has but the release leaves out, and why.
    pub left_out: Vec<String>,
}

/// Decides what ships: each proved platform's helper (set on `proved`),
/// the probes — each only when the run that proved the release used that
/// very image (`tools`, from the reports) — and the annotations.
pub async fn decide(
    engine: &Engine,
    matrix: &Matrix,
    root: &Path,
    proved: &mut [Proved],
    tools: &[(PathBuf, Tool)],
    meta: &Meta<'_>,
) -> Result<Contents, ReleaseError> {
    let mut left_out = helpers(engine, matrix, root, proved, tools).await?;
    let (probes, why) = probes(engine, matrix, root, tools).await?;
    left_out.extend(why);
    Ok(Contents {
        annotations: annotations(meta, proved, root),
        probes,
        left_out,
    })
}

/// Whether the engine's image `tag` is one the reports say their runs
/// used in `role`: its ID then, else why not (None: no run used any).
async fn used(
    engine: &Engine,
    tag: &str,
    role: ToolRole,
    tools: &[(PathBuf, Tool)],
) -> Result<Option<Result<String, String>>, ReleaseError> {
    let runs: Vec<&(PathBuf, Tool)> = tools
        .iter()
        .filter(|(_, t)| t.role == role && t.image == tag)
        .collect();
    let Some((path, first)) = runs.first() else {
        return Ok(None);
    };
    let Some(local) = engine.local_image(tag).await? else {
        return Ok(Some(Err(format!(
            "{tag}: the engine no longer has the {} {} used",
            first.what(),
            path.display()
        ))));
    };
    if runs
        .iter()
        .any(|(_, t)| t.id.as_deref() == Some(local.id.as_str()))
    {
        return Ok(Some(Ok(local.id)));
    }
    let said: Vec<String> = runs
        .iter()
        .map(|(path, t)| match (&t.id, &t.from) {
            (Some(id), _) => format!("{} used image {}", path.display(), super::gate::short(id)),
            (None, Some(from)) => format!("{} took it from release {from}", path.display()),
            (None, None) => format!("{} names no image", path.display()),
        })
        .collect();
    Ok(Some(Err(format!(
        "{tag}: the engine's {} is image {}, not one the proving run used ({})",
        first.what(),
        super::gate::short(&local.id),
        said.join("; ")
    ))))
}

/// The readdir() probes the proving run used, when the engine still has
/// that very image: shipped with the release under the key that says what
/// they are whatever machine built them, so that a repro from it needs no
/// probe image. Else none, and why.
async fn probes(
    engine: &Engine,
    matrix: &Matrix,
    root: &Path,
    tools: &[(PathBuf, Tool)],
) -> Result<(Option<(String, Probes)>, Vec<String>), ReleaseError> {
    let mut why = vec![];
    for p in &matrix.platforms {
        let spec = recipe::probe_spec(matrix, root, p);
        match used(engine, &spec.tag, ToolRole::Probes, tools).await? {
            None => continue,
            Some(Err(no)) => why.push(no),
            Some(Ok(id)) => {
                let tar = run::copy_out(engine, &id, "/probes").await?;
                let probes = probes_of(tar.as_slice()).map_err(|source| ReleaseError::Io {
                    path: format!("{}:/probes", spec.tag).into(),
                    source,
                })?;
                return Ok((Some((recipe::probes_key(matrix, root, p)?, probes)), vec![]));
            }
        }
    }
    if why.is_empty() && !tools.is_empty() {
        why.push("readdir() probes: no run of the release built them (it ran no tmpfs or chroot check, or took them from a release)".into());
    }
    Ok((None, why))
}

/// The emulator helper of each proved platform's architecture that a run
/// of the release used to register its emulators (this engine's, or one a
/// prove job on a runner of that architecture used and handed on): shipped
/// with that platform's image, so that a repro from the release on an empty
/// engine of that architecture registers emulators at once. A helper no
/// proving run used is left out, whatever its tag and labels say: users
/// run it with CAP_SYS_ADMIN.
async fn helpers(
    engine: &Engine,
    matrix: &Matrix,
    root: &Path,
    proved: &mut [Proved],
    tools: &[(PathBuf, Tool)],
) -> Result<Vec<String>, ReleaseError> {
    let mut left_out = vec![];
    for p in proved.iter_mut() {
        let spec = recipe::helper_spec(matrix, root, &p.platform);
        let want = build::inputs(&spec)?.hash;
        let here = engine.up_to_date(&spec.tag, &want).await?.is_some();
        match used(engine, &spec.tag, ToolRole::Helper, tools).await? {
            Some(Ok(id)) if here => {
                p.ids.insert(spec.tag.clone(), id);
                p.helper = Some(spec.tag);
            }
            Some(Ok(_)) => left_out.push(format!(
                "{}: no longer this tree's emulator helper",
                spec.tag
            )),
            Some(Err(why)) => left_out.push(why),
            None if here => left_out.push(format!(
                "{}: no run of the release used this emulator helper",
                spec.tag
            )),
            None => {}
        }
    }
    Ok(left_out)
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
            crate::names::LICENSES.to_string(),
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
