//! Image builds through the engine's classic builder, skipped when the inputs' content hash is unchanged.

use crate::engine::{timeout, Engine, EngineError};
use crate::names::{LABEL_INPUTS, LABEL_PARTS};
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// `repo:tag` of the result.
    pub tag: String,
    pub platform: String,
    /// Dockerfile path inside the context.
    pub dockerfile: String,
    /// Repository-relative files and folders that make the context.
    pub context: Vec<PathBuf>,
    /// Build arguments; part of the content hash.
    pub build_args: BTreeMap<String, String>,
    /// Build arguments that describe where this machine got its parts (e.g.
    /// the base's provenance): passed, not hashed, so the same tree has the
    /// same content hash on every machine.
    pub unhashed_args: BTreeMap<String, String>,
    /// Other facts the result depends on (a parent image id, the base's
    /// recipe); part of the content hash.
    pub depends_on: Vec<String>,
    /// Parts of the content hash that come from elsewhere (the inputs of
    /// the image this one is built on), merged with its own.
    pub extra_parts: BTreeMap<String, String>,
    /// Labels set on the result besides the harness's own (not hashed).
    pub labels: BTreeMap<String, String>,
    /// Images whose layers the builder may reuse (a release of this image).
    /// Every step built anew, the engine's layer cache and an up-to-date
    /// image of the same inputs ignored (a rebuild that checks a release).
    pub no_cache: bool,
    pub cache_from: Vec<String>,
    pub timeout: Duration,
    /// Step name used in messages and progress.
    pub step: String,
    /// The checkout the context paths are relative to.
    pub root: PathBuf,
}

/// What an image is built from, hashed part by part: the content hash
/// (`io.guix-matrix.inputs`) is the hash of the parts, and the parts
/// (`io.guix-matrix.inputs.parts`) say what changed between two images.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inputs {
    pub hash: String,
    /// part ("file scripts/entry-point.sh", "arg GUIX_DAEMON_ARGS", …) -> sha256
    pub parts: BTreeMap<String, String>,
}

impl Inputs {
    fn from_parts(parts: BTreeMap<String, String>) -> Inputs {
        let mut h = Sha256::new();
        for (name, sum) in &parts {
            h.update(format!("{name} {sum}\n"));
        }
        Inputs {
            hash: hex::encode(h.finalize()),
            parts,
        }
    }

    /// The inputs an image's labels claim, checked for consistency: the
    /// parts must hash to the content hash (a label edited by hand does not).
    pub fn from_labels(labels: &HashMap<String, String>) -> Result<Inputs, String> {
        let hash = labels
            .get(LABEL_INPUTS)
            .ok_or("no io.guix-matrix.inputs label")?;
        let parts = labels
            .get(LABEL_PARTS)
            .ok_or("no io.guix-matrix.inputs.parts label")?;
        let parts: BTreeMap<String, String> = serde_json::from_str(parts)
            .map_err(|e| format!("io.guix-matrix.inputs.parts is not a JSON map: {e}"))?;
        let inputs = Inputs::from_parts(parts);
        if &inputs.hash != hash {
            return Err(format!(
                "its parts hash to {}, its io.guix-matrix.inputs label says {}: the labels were altered",
                &inputs.hash[..12],
                hash.get(..12).unwrap_or(hash)
            ));
        }
        Ok(inputs)
    }

    /// The parts that differ from `other` (changed, added or gone), by name.
    pub fn changed_since(&self, other: &Inputs) -> Vec<String> {
        let mut names: Vec<&String> = self.parts.keys().chain(other.parts.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter(|n| self.parts.get(*n) != other.parts.get(*n))
            .map(|n| n.split_once(' ').map_or(n.as_str(), |(_, p)| p).to_string())
            .collect()
    }
}

/// How a build ended.
#[derive(Debug, Clone)]
pub struct Built {
    pub tag: String,
    pub id: String,
    pub inputs: String,
    /// False when an image with the same inputs hash was already there.
    pub rebuilt: bool,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{step}: cannot read build input {path}: {source}")]
    Input {
        step: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{step}: the build failed: {message}{hint}\n  last build output:\n{tail}")]
    Failed {
        step: String,
        message: String,
        tail: String,
        /// What the harness found out about the failure (e.g. a full disk).
        hint: String,
    },
}

impl BuildError {
    /// What to do about it (a full disk names its fix in the message itself).
    pub fn fix(&self) -> Option<String> {
        match self {
            BuildError::Engine(e) => e.fix(),
            _ => None,
        }
    }
}

/// When a build fails, a full data root is the usual silent cause: the
/// engine cannot even keep the step's output, and it frees the failed step's
/// layer right after. An image needs about 1 GiB, so a data root (on this
/// machine) with less than 2 GiB free after a failed build is named as the
/// likely cause.
async fn disk_hint(engine: &Engine, message: &str) -> String {
    let root = engine
        .docker
        .info()
        .await
        .ok()
        .and_then(|i| i.docker_root_dir);
    let free = root
        .as_deref()
        .and_then(|r| crate::host::free_bytes(std::path::Path::new(r)));
    let enospc = message.contains("no space left on device");
    if !enospc && !free.is_some_and(|f| f < 2 << 30) {
        return String::new();
    }
    format!(
        "\n  cause{}: the engine's data root ({}) is full{}; an image needs about 1 GiB\n  fix: free space there (`cargo run -p harness -- clean`, `docker system prune`); `harness doctor` shows what is free",
        if enospc { "" } else { " (likely)" },
        root.unwrap_or_else(|| "?".into()),
        free.map(|f| format!(" ({} MiB free after the failed step)", f >> 20)).unwrap_or_default()
    )
}

/// The files of the context, sorted, with their bytes and modes.
fn collect(
    root: &Path,
    context: &[PathBuf],
    step: &str,
) -> Result<Vec<(String, u32, Vec<u8>)>, BuildError> {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = context.to_vec();
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let err = |source| BuildError::Input {
            step: step.to_string(),
            path: abs.clone(),
            source,
        };
        let meta = std::fs::metadata(&abs).map_err(err)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&abs).map_err(err)? {
                let entry = entry.map_err(err)?;
                stack.push(rel.join(entry.file_name()));
            }
        } else {
            use std::os::unix::fs::PermissionsExt;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            files.push((
                rel.to_string_lossy().into_owned(),
                mode,
                std::fs::read(&abs).map_err(err)?,
            ));
        }
    }
    files.sort();
    Ok(files)
}

pub fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The content hash of `spec` over the context files (bytes and mode), the
/// hashed build arguments, what it depends on, the platform and the
/// Dockerfile: equal hashes mean an equal image.
pub fn inputs_of(spec: &BuildSpec, files: &[(String, u32, Vec<u8>)]) -> Inputs {
    let mut parts = spec.extra_parts.clone();
    for (path, mode, data) in files {
        let mut h = Sha256::new();
        h.update(format!("{mode:o} {}\n", data.len()));
        h.update(data);
        parts.insert(format!("file {path}"), hex::encode(h.finalize()));
    }
    for (k, v) in &spec.build_args {
        parts.insert(format!("arg {k}"), sha(v.as_bytes()));
    }
    for (i, d) in spec.depends_on.iter().enumerate() {
        parts.insert(format!("from {i}"), sha(d.as_bytes()));
    }
    parts.insert("platform platform".into(), sha(spec.platform.as_bytes()));
    parts.insert(
        "dockerfile dockerfile".into(),
        sha(spec.dockerfile.as_bytes()),
    );
    Inputs::from_parts(parts)
}

/// The inputs `spec` would build from the tree as it is now (no engine).
pub fn inputs(spec: &BuildSpec) -> Result<Inputs, BuildError> {
    let files = collect(&spec.root, &spec.context, &spec.step)?;
    Ok(inputs_of(spec, &files))
}

/// Builds `spec` unless the tagged image already carries the same inputs hash.
pub async fn build(
    engine: &Engine,
    spec: &BuildSpec,
    progress: &dyn Fn(&str),
) -> Result<Built, BuildError> {
    let started = Instant::now();
    let files = collect(&spec.root, &spec.context, &spec.step)?;
    let Inputs {
        hash: inputs,
        parts,
    } = inputs_of(spec, &files);
    let replaced = engine.local_image(&spec.tag).await?;
    if let Some(img) = replaced.clone().filter(|_| !spec.no_cache) {
        if img.has_inputs(&inputs) {
            tracing::info!(
                "{}: {} is up to date (inputs {})",
                spec.step,
                spec.tag,
                &inputs[..12]
            );
            return Ok(Built {
                tag: spec.tag.clone(),
                id: img.id,
                inputs,
                rebuilt: false,
                elapsed: started.elapsed(),
            });
        }
    }

    let mut tar = tar::Builder::new(Vec::new());
    for (path, mode, data) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, path, data.as_slice())
            .map_err(|source| BuildError::Input {
                step: spec.step.clone(),
                path: path.into(),
                source,
            })?;
    }
    let context = tar.into_inner().expect("in-memory tar");

    let mut labels: HashMap<String, String> = Engine::labels(Some(&spec.platform));
    labels.extend(spec.labels.clone());
    labels.insert(LABEL_INPUTS.into(), inputs.clone());
    labels.insert(
        LABEL_PARTS.into(),
        serde_json::to_string(&parts).expect("parts json"),
    );
    let args: HashMap<String, String> = spec
        .build_args
        .iter()
        .chain(&spec.unhashed_args)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let opts = BuildImageOptionsBuilder::default()
        .cachefrom(&spec.cache_from)
        .dockerfile(&spec.dockerfile)
        .t(&spec.tag)
        .platform(&spec.platform)
        .buildargs(&args)
        .labels(&labels)
        .rm(true)
        .forcerm(true)
        .nocache(spec.no_cache)
        .build();
    let mut stream =
        engine
            .docker
            .build_image(opts, None, Some(bollard::body_full(context.into())));
    let mut log = String::new();
    let result = timeout(&spec.step, spec.timeout, async {
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(BuildError::Failed {
                        step: spec.step.clone(),
                        hint: disk_hint(engine, &error).await,
                        message: error,
                        tail: crate::text::tail_lines(&log, 25),
                    })
                }
                Err(e) => return Err(EngineError::api(spec.step.clone())(e).into()),
            };
            if let Some(s) = info.stream {
                log.push_str(&s);
                if let Some(step_line) = s.lines().find(|l| l.starts_with("Step ")) {
                    progress(step_line);
                }
            }
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                return Err(BuildError::Failed {
                    step: spec.step.clone(),
                    hint: disk_hint(engine, &err).await,
                    message: err,
                    tail: crate::text::tail_lines(&log, 25),
                });
            }
        }
        Ok(())
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(e.into()),
    }
    tracing::debug!("{}: build output:\n{log}", spec.step);
    let img = engine.local_image(&spec.tag).await?;
    let id = img.map(|i| i.id).unwrap_or_default();
    // The image this build replaced has lost its tag: remove it (unless a
    // container still uses it), so the engine does not fill up.
    if let Some(old) = replaced.filter(|old| old.id != id) {
        engine.remove_unused_image(&old.id).await;
    }
    tracing::info!(
        "{}: built {} in {:.0?}",
        spec.step,
        spec.tag,
        started.elapsed()
    );
    Ok(Built {
        tag: spec.tag.clone(),
        id,
        inputs,
        rebuilt: true,
        elapsed: started.elapsed(),
    })
}
