//! Starting from a release: a platform's released image is used as is when it is what this tree builds, else its base and layers seed the build; nothing is used unverified.

use crate::engine::build::Inputs;
use crate::engine::{Engine, EngineError, LocalImage};
use crate::matrix::{Defaults, Platform};
use crate::names;
use crate::names::LABEL_PLATFORM;
use crate::release::open::{OpenError, Part, Release};
use std::path::Path;

/// Where a leg's image came from, as the report and the summary say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Built in this run (no release was given).
    Built,
    /// The engine already had an image of this tree.
    UpToDate,
    /// The release's image is what this tree builds: used as is.
    Reused { release: String },
    /// Built on the release's base, reusing its layers up to the first
    /// changed input.
    RebuiltFrom {
        release: String,
        changed: Vec<String>,
    },
    /// A release was given but could not help; built from scratch.
    BuiltCold { why: String },
    /// A published image checked in place of a build (`run --image`).
    Published { source: String },
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Start::Built => write!(f, "built"),
            Start::UpToDate => write!(f, "up to date"),
            Start::Reused { release } => write!(f, "reused {release}"),
            Start::RebuiltFrom { release, changed } => {
                write!(
                    f,
                    "rebuilt from {release} (changed: {})",
                    changed.join(", ")
                )
            }
            Start::BuiltCold { why } => write!(f, "built cold ({why})"),
            Start::Published { source } => write!(f, "published {source}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReuseError {
    #[error("{platform}: the image of release {release} is refused: {why}")]
    Altered {
        platform: String,
        release: String,
        why: String,
    },
    #[error("{platform}: the image of release {release} claims this tree's content ({hash}) but its {path} is not the tree's {file}: refused")]
    Content {
        platform: String,
        release: String,
        hash: String,
        file: String,
        path: String,
    },
    #[error("{platform}: release {release} is version {version}, older than {local}, which this engine's images came from: starting from it would roll the engine back")]
    Older {
        platform: String,
        release: String,
        version: String,
        local: String,
    },
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{platform}: this checkout is not the tree of release {release} (its {changed} differ): a rebuild of it checks nothing")]
    OtherTree {
        platform: String,
        release: String,
        changed: String,
        revision: String,
    },
    #[error("{platform}: the release's pull started from release {started}'s generation{}, so its rebuild starts there too", given.as_ref().map(|g| format!(", and --from is release {g}")).unwrap_or_default())]
    PulledFrom {
        platform: String,
        started: String,
        given: Option<String>,
    },
    #[error("{platform}: release {release}'s image is no generation this tree's pull ({by}) can start from: its Guix layer is not this tree's, or it was not pulled that way")]
    NotAStart {
        platform: String,
        release: String,
        by: String,
    },
    #[error("{platform}: cannot read {path} to verify the release: {source}")]
    Tree {
        platform: String,
        path: String,
        source: std::io::Error,
    },
}

impl ReuseError {
    pub fn fix(&self) -> Option<String> {
        match self {
            ReuseError::Altered { .. } | ReuseError::Content { .. } => Some(
                "use a release made by `harness release` and not modified since; or drop --from to build"
                    .into(),
            ),
            ReuseError::Older { local, .. } => Some(format!(
                "start from a release at least as new as {local} (`--from REF:{local}`), or pass --allow-older to go back on purpose"
            )),
            ReuseError::Open(e) => e.fix(),
            ReuseError::Engine(e) => e.fix(),
            ReuseError::Tree { .. } => None,
            ReuseError::PulledFrom { started, .. } => Some(format!(
                "pass release {started} with --from (its directory, or REF:{started}); from a registry, the same repository's {started} is taken when --from is not given"
            )),
            ReuseError::NotAStart { release, .. } => Some(format!(
                "pass the release the pull started from (release {release}, as the rebuilt release's pull label names it) with --from"
            )),
            ReuseError::OtherTree { revision, .. } => Some(format!(
                "check out the release's revision (`git checkout {revision}`) and rebuild from there"
            )),
        }
    }
}

/// What a release can do for one platform's build.
#[derive(Debug)]
pub enum Seed {
    /// Its image is what the tree builds (of these inputs), verified: use it.
    Reuse(LocalImage, String),
    /// Build on its base with its image as the layer cache.
    Layers { image: String, changed: Vec<String> },
    /// Nothing: build cold, for this reason.
    Cold(String),
}

/// A build of one platform from a vouched-for release: what seeding it needs.
#[derive(Clone, Copy)]
pub struct Seeding<'a> {
    pub engine: &'a Engine,
    pub release: &'a Release,
    pub platform: &'a Platform,
    /// The inputs the build accepts, the build's own first.
    pub wants: &'a [Inputs],
    pub defaults: &'a Defaults,
    /// The checkout whose files a reused image must hold.
    pub root: &'a Path,
    pub progress: &'a (dyn Fn(&str) + Sync),
}

/// Fetches `platform`'s image from the release `from` (checksums verified)
/// and decides what it can do for a tree whose inputs are one of `wants`
/// (the first is the build's, the others images it accepts). A release
/// that cannot be reached is a cold build, said so; a release that is not
/// what its labels or checksums say is an error, never used.
pub async fn seed(s: &Seeding<'_>) -> Result<Seed, ReuseError> {
    let Seeding {
        engine,
        release: release_,
        platform,
        defaults,
        progress,
        ..
    } = *s;
    let release = release_.name();
    progress(&format!("fetch release {release}"));
    let tag = names::from_release(defaults, platform);
    let img = match release_.fetch(engine, platform, &tag, Part::Image).await {
        Ok(img) => img,
        Err(e @ (OpenError::Fetch { .. } | OpenError::NotInRelease { .. })) => {
            tracing::warn!(
                "{}: release {release} cannot be used ({e}); building instead",
                platform.docker
            );
            return Ok(Seed::Cold(format!(
                "{release} unavailable: {}",
                first_line(&e)
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let decided = decide(s, img).await;
    // The fetched image is kept only for what uses it (reused, or the
    // build's layer cache); refused or of no use, it leaves no name.
    if !matches!(decided, Ok(Seed::Reuse(..) | Seed::Layers { .. })) {
        engine.remove_image(&tag).await;
    }
    decided
}

/// What the fetched release image `img` (under its `-release` tag) does
/// for the build.
async fn decide(s: &Seeding<'_>, img: LocalImage) -> Result<Seed, ReuseError> {
    let Seeding {
        engine,
        release: release_,
        platform,
        wants,
        defaults,
        root,
        progress,
    } = *s;
    let release = release_.name();
    let tag = names::from_release(defaults, platform);
    let base_tag = names::from_release_base(defaults, platform);
    let base_tag = base_tag.as_str();
    let altered = |why: String| ReuseError::Altered {
        platform: platform.docker.clone(),
        release: release.clone(),
        why,
    };
    let claimed = Inputs::from_labels(&img.labels).map_err(altered)?;
    // A release on a base too old for matrix.toml (with a newer suite on
    // the mirror) seeds nothing: Debian's updates reach the image.
    if let Some(why) = crate::base::stale(defaults, crate::base::date(&img)).await {
        tracing::warn!(
            "{}: release {release}'s base is refused: {why}; building cold",
            platform.docker
        );
        return Ok(Seed::Cold(format!("release {release}'s base: {why}")));
    }
    match img.labels.get(LABEL_PLATFORM) {
        Some(p) if *p == platform.docker => {}
        other => {
            return Err(altered(format!(
                "it is labelled for platform {}",
                other.map_or("(none)", String::as_str)
            )))
        }
    }
    if let Some(want) = wants.iter().find(|w| w.hash == claimed.hash) {
        progress("verify the released image against the tree");
        verify_content(engine, &tag, platform, &release, want, root).await?;
        return Ok(Seed::Reuse(img, want.hash.clone()));
    }
    // What changed, against the accepted inputs nearest the release's.
    let changed = wants
        .iter()
        .map(|w| w.changed_since(&claimed))
        .min_by_key(Vec::len)
        .unwrap_or_default();
    progress(&format!("fetch the base of release {release}"));
    let fetched = release_.fetch(engine, platform, base_tag, Part::Base).await;
    if let Ok(base) = &fetched {
        // The local base is replaced only by a verified release's base that
        // is the bottom of its verified image.
        if img.layers.starts_with(&base.layers) && !base.layers.is_empty() {
            engine
                .tag(&base.id, &names::base(defaults, platform))
                .await?;
        }
    }
    engine.remove_image(base_tag).await;
    match fetched {
        Ok(base) if img.layers.starts_with(&base.layers) && !base.layers.is_empty() => {
            Ok(Seed::Layers {
                image: tag,
                changed,
            })
        }
        Ok(_) => Err(altered("its base is not the bottom of its layers".into())),
        Err(e @ (OpenError::Fetch { .. } | OpenError::NotInRelease { .. })) => {
            tracing::warn!(
                "{}: release {release} has no base to build on ({e}); building cold",
                platform.docker
            );
            Ok(Seed::Cold(format!(
                "{release} has no base for {}",
                platform.docker
            )))
        }
        Err(e) => Err(e.into()),
    }
}

fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// Every file the Dockerfiles copy from the tree is byte for byte in the
/// image where they put it (read out of a created, never started
/// container: no emulator needed).
async fn verify_content(
    engine: &Engine,
    image: &str,
    platform: &Platform,
    release: &str,
    want: &Inputs,
    root: &Path,
) -> Result<(), ReuseError> {
    let read = |rel: &str| {
        std::fs::read(root.join(rel)).map_err(|source| ReuseError::Tree {
            platform: platform.docker.clone(),
            path: rel.to_string(),
            source,
        })
    };
    let mut dockerfile = String::new();
    for file in crate::recipe::DOCKERFILES {
        dockerfile.push_str(&String::from_utf8_lossy(&read(file)?));
        dockerfile.push('\n');
    }
    let files: Vec<String> = want
        .parts
        .keys()
        .filter_map(|k| k.strip_prefix("file "))
        .map(str::to_string)
        .collect();
    for (file, path) in copied(&dockerfile, &files) {
        let tree = read(&file)?;
        let tar = crate::engine::run::copy_out(engine, image, &path)
            .await
            .map_err(|e| ReuseError::Altered {
                platform: platform.docker.clone(),
                release: release.to_string(),
                why: format!("cannot read {path} from it: {e}"),
            })?;
        if first_file(&tar).as_deref() != Some(tree.as_slice()) {
            return Err(ReuseError::Content {
                platform: platform.docker.clone(),
                release: release.to_string(),
                hash: want.hash.chars().take(12).collect(),
                file,
                path,
            });
        }
    }
    Ok(())
}

fn first_file(tar: &[u8]) -> Option<Vec<u8>> {
    let mut archive = tar::Archive::new(tar);
    let mut entry = archive
        .entries()
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.header().entry_type().is_file())?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut bytes).ok()?;
    Some(bytes)
}

/// Where the Dockerfile's `COPY SRC… DEST` lines put the tree's `files`:
/// (tree path, image path) pairs. A source ending in `/` is a folder.
pub fn copied(dockerfile: &str, files: &[String]) -> Vec<(String, String)> {
    let mut out = vec![];
    for line in dockerfile.lines() {
        let Some(args) = line.trim().strip_prefix("COPY ") else {
            continue;
        };
        let words: Vec<&str> = args
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let Some((dest, sources)) = words.split_last() else {
            continue;
        };
        for src in sources {
            let src = src.trim_start_matches("./");
            if let Some(dir) = src.strip_suffix('/') {
                for f in files.iter().filter(|f| f.starts_with(&format!("{dir}/"))) {
                    let rest = &f[dir.len() + 1..];
                    out.push((f.clone(), format!("{}/{rest}", dest.trim_end_matches('/'))));
                }
            } else if files.iter().any(|f| f == src) {
                let to = if dest.ends_with('/') {
                    format!("{dest}{}", src.rsplit('/').next().unwrap_or(src))
                } else {
                    dest.to_string()
                };
                out.push((src.to_string(), to));
            }
        }
    }
    out
}

#[cfg(test)]
mod version_tests {
    use super::older;

    /// Dated versions compare by date; other shapes never do.
    #[test]
    fn versions_compare_only_when_both_are_dated() {
        assert!(older("v20260101", "v20261204"));
        assert!(!older("v20261204", "v20260101"));
        assert!(!older("v20261204", "v20261204"));
        assert!(!older("v1", "v20261204"));
        assert!(!older("latest", "v20261204"));
        assert!(!older("v2026010x", "v20261204"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_lines_map_tree_files_to_image_paths() {
        let files: Vec<String> = ["substitutes/a.pub", "substitutes/urls", "scripts/e.sh", "x"]
            .map(String::from)
            .to_vec();
        let df = "FROM b\nCOPY substitutes/ /etc/s/\nCOPY --chown=0 scripts/e.sh /e.sh\nCOPY x /opt/\nRUN true\n";
        assert_eq!(
            copied(df, &files),
            [
                ("substitutes/a.pub", "/etc/s/a.pub"),
                ("substitutes/urls", "/etc/s/urls"),
                ("scripts/e.sh", "/e.sh"),
                ("x", "/opt/x"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn the_changed_parts_are_named_by_their_paths() {
        use sha2::Digest;
        // The content hash computed here independently of image.rs.
        let labels = |parts: &[(&str, &str)]| {
            let parts: std::collections::BTreeMap<String, String> = parts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let json = serde_json::to_string(&parts).unwrap();
            let mut h = sha2::Sha256::new();
            for (k, v) in &parts {
                h.update(format!("{k} {v}\n"));
            }
            let hash = hex::encode(h.finalize());
            std::collections::HashMap::from([
                (crate::names::LABEL_INPUTS.to_string(), hash),
                (crate::names::LABEL_PARTS.to_string(), json),
            ])
        };
        let old = Inputs::from_labels(&labels(&[("file a", "1"), ("arg X", "2")])).unwrap();
        let new = Inputs::from_labels(&labels(&[("file a", "3"), ("arg X", "2"), ("file b", "4")]))
            .unwrap();
        assert_eq!(new.changed_since(&old), ["a", "b"]);
        let mut forged = labels(&[("file a", "1")]);
        forged.insert(crate::names::LABEL_INPUTS.into(), "0".repeat(64));
        let err = Inputs::from_labels(&forged).unwrap_err();
        assert!(err.contains("the labels were altered"), "{err}");
    }
}

/// Whether release version `a` is older than `b`: both `vYYYYMMDD` (or any
/// `v` and digits of one length); versions of other shapes never compare.
pub fn older(a: &str, b: &str) -> bool {
    let digits = |v: &str| {
        v.strip_prefix('v')
            .filter(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()))
            .map(str::to_string)
    };
    match (digits(a), digits(b)) {
        (Some(a), Some(b)) if a.len() == b.len() => a < b,
        _ => false,
    }
}

/// No rollback of an engine: the newest release version the local images
/// of `platform` came from (its image and the fetched release image keep
/// the version label of a release), when `release` is older than it.
pub async fn check_not_older(
    engine: &Engine,
    defaults: &Defaults,
    platform: &Platform,
    release: &Release,
) -> Result<(), ReuseError> {
    let Some(version) = release.vouched.version() else {
        return Ok(());
    };
    for image in [
        names::image(defaults, platform),
        names::from_release(defaults, platform),
    ] {
        let Some(img) = engine.local_image(&image).await? else {
            continue;
        };
        if let Some(local) = img.labels.get(names::VERSION) {
            if older(&version, local) {
                return Err(ReuseError::Older {
                    platform: platform.docker.clone(),
                    release: release.name(),
                    version,
                    local: local.clone(),
                });
            }
        }
    }
    Ok(())
}
