//! `harness release`: publish what a run proved, as tarballs with checksums and optionally to a registry under a dated tag, from one set of blobs.

use super::Context;
use crate::error::{Error, Exit};
use crate::pipeline::Pipeline;
use crate::release::{self, PushTarget};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// Write the tarballs (one OCI image layout per platform, which `docker
    /// load` also takes), the index and SHA256SUMS here.
    #[arg(long, default_value = "dist")]
    pub dist: PathBuf,
    /// The reports directory of the run that proved the images (its
    /// report.json; the file itself is taken too); repeatable (a release
    /// fanned out over runners has one per platform).
    #[arg(long, value_name = "DIR", default_value = "reports")]
    pub report: Vec<PathBuf>,
    /// The release tag (default: today's date, vYYYYMMDD, UTC).
    #[arg(long, value_parser = parse_tag)]
    pub tag: Option<String>,
    /// Release nothing unless every platform of the matrix passed.
    #[arg(long)]
    pub require_all: bool,
    /// Ship images that carry no real `guix pull` of the pin (Debian's guix,
    /// or pulled by the offline stand-in): each says so in its
    /// io.guix-matrix.pulled label, and the index in io.guix-matrix.pulled.
    /// Without it such an image is refused (exit 4).
    #[arg(long)]
    pub unpulled: bool,
    /// Also push to REGISTRY/REPO the same blobs: each platform's image by
    /// digest, then one multi-platform index under the tag and `latest`
    /// (the login of `docker login` for that host, or GUIX_MATRIX_REGISTRY_USER
    /// and GUIX_MATRIX_REGISTRY_TOKEN, which go to this host only, or to
    /// GUIX_MATRIX_REGISTRY_HOST's when it is set).
    #[arg(long, value_name = "REGISTRY/REPO", value_parser = parse_registry)]
    pub push: Option<String>,
    /// Overwrite a tag that already holds other content.
    #[arg(long, requires = "push")]
    pub force: bool,
    /// Mount the blobs REPO of the same registry already has instead of
    /// uploading them (a release moved to another repository, a fork).
    #[arg(long, value_name = "REPO", requires = "push")]
    pub mount_from: Option<String>,
    /// org.opencontainers.image.source of the release (default: none).
    #[arg(long, env = "GUIX_MATRIX_SOURCE")]
    pub source: Option<String>,
    /// org.opencontainers.image.revision (default: the checkout's commit).
    #[arg(long, env = "GITHUB_SHA")]
    pub revision: Option<String>,
    /// Sign the release with this private key (PKCS#8 PEM, `harness keygen`):
    /// SHA256SUMS.sig beside SHA256SUMS (a detached signature, as cosign 2's
    /// `sign-blob` writes it and cosign 2 and 3 `verify-blob --signature`),
    /// and with --push a cosign signature of the index and of every
    /// platform's image in the registry.
    #[arg(long, value_name = "FILE", env = "GUIX_MATRIX_SIGN_KEY")]
    pub sign_key: Option<PathBuf>,
    /// Print what was written and pushed as JSON (files with sizes and
    /// checksums, each platform's manifest digest, the index digest). In
    /// GitHub Actions the digests also go to $GITHUB_OUTPUT.
    #[arg(long)]
    pub json: bool,
    /// Write the release notes (pin, Guix commits since the last release,
    /// each platform's base date and digest, the verify lines) as Markdown.
    #[arg(long, value_name = "FILE")]
    pub notes: Option<PathBuf>,
    #[command(flatten)]
    pub engine: super::EngineArgs,
    #[command(flatten)]
    pub workspace: super::Workspace,
}

/// What a release wrote and pushed: `--json`, and $GITHUB_OUTPUT.
#[derive(Debug, serde::Serialize)]
struct Shipped {
    tag: String,
    dist: PathBuf,
    files: Vec<File>,
    /// The sha256 of SHA256SUMS: `--from DIST@sha256:…` pins the release.
    sums_digest: crate::registry::Digest,
    /// The multi-platform index (the file, and the registry's tag).
    index: crate::registry::Digest,
    /// Each platform's image manifest: the same in the tarball, the index
    /// and the registry.
    platforms: BTreeMap<String, crate::registry::Digest>,
    signed: bool,
    not_released: Vec<String>,
    pushed: Option<Pushed>,
    seconds: Seconds,
}

/// How long each step took.
#[derive(Debug, serde::Serialize)]
struct Seconds {
    export: f64,
    dist: f64,
}

fn round(s: f64) -> f64 {
    (s * 10.0).round() / 10.0
}

#[derive(Debug, serde::Serialize)]
struct File {
    name: String,
    sha256: String,
    size: u64,
}

#[derive(Debug, serde::Serialize)]
struct Pushed {
    reference: String,
    latest: String,
    index: crate::registry::Digest,
    platforms: BTreeMap<String, crate::registry::Digest>,
    signed: bool,
    /// The blobs sent (those the registry had are not sent again).
    uploaded: release::Uploaded,
    seconds: f64,
}

/// What `release` says beyond what it shipped.
struct Said<'a> {
    tag: &'a str,
    dist: &'a std::path::Path,
    signed: bool,
    registry: Option<&'a PushTarget>,
    not_released: Vec<String>,
}

impl Shipped {
    /// The summary of a release that shipped.
    fn of(shipped: release::Shipped, said: Said<'_>) -> Shipped {
        let (dist, pushed) = (shipped.dist, shipped.pushed);
        Shipped {
            tag: said.tag.to_string(),
            dist: said.dist.to_path_buf(),
            files: dist
                .files
                .iter()
                .map(|(name, (sum, size))| File {
                    name: name.clone(),
                    sha256: sum.clone(),
                    size: *size,
                })
                .collect(),
            sums_digest: dist.sums_digest.clone(),
            index: shipped.index,
            platforms: shipped.platforms.into_iter().collect(),
            signed: said.signed,
            not_released: said.not_released,
            pushed: pushed.map(|pushed| {
                let r = said.registry.expect("pushed to a registry");
                Pushed {
                    reference: r.reference(said.tag),
                    latest: r.reference("latest"),
                    index: pushed.index,
                    platforms: pushed.platforms.into_iter().collect(),
                    signed: pushed.signed,
                    uploaded: pushed.uploaded,
                    seconds: round(pushed.seconds),
                }
            }),
            seconds: Seconds {
                export: round(shipped.export_seconds),
                dist: round(dist.seconds),
            },
        }
    }

    fn print_dist(&self) {
        let dist = self.dist.display();
        for f in &self.files {
            println!(
                "{dist}/{}  {} MiB  sha256:{}",
                f.name,
                f.size >> 20,
                f.sha256
            );
        }
        println!("{dist}/{}", crate::release::trust::SUMS);
        if self.signed {
            println!("{dist}/{}", crate::release::trust::SUMS_SIG);
        }
        for (platform, digest) in &self.platforms {
            println!("{platform}: {digest}");
        }
        println!("index: {}", self.index);
        println!("pin this release: --from {dist}@{}", self.sums_digest);
        if !self.not_released.is_empty() {
            println!(
                "not released (did not pass every check): {}",
                self.not_released.join(", ")
            );
        }
    }

    fn print_push(&self) {
        if let Some(p) = &self.pushed {
            println!(
                "pushed {} and {} ({}{})",
                p.reference,
                p.latest,
                p.index,
                if p.signed { ", signed" } else { "" }
            );
            println!(
                "uploaded {} blobs, {} MiB ({} already in the registry, {} mounted)",
                p.uploaded.blobs,
                p.uploaded.bytes >> 20,
                p.uploaded.present,
                p.uploaded.mounted
            );
            println!("pin this release: --from {}@{}", p.reference, p.index);
        }
    }

    /// `tag`, `sums-digest`, `index-digest` and `reference` for the next
    /// steps of a GitHub Actions job.
    fn github_output(&self, path: &std::path::Path) -> Result<(), Error> {
        use std::io::Write;
        let mut lines = format!("tag={}\nsums-digest={}\n", self.tag, self.sums_digest);
        if let Some(p) = &self.pushed {
            lines.push_str(&format!(
                "index-digest={}\nreference={}\n",
                p.index, p.reference
            ));
        }
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .and_then(|mut f| f.write_all(lines.as_bytes()))
            .map_err(|source| crate::release::ReleaseError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(())
    }
}

fn parse_tag(s: &str) -> Result<String, String> {
    let ok = regex::Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("regex");
    if ok.is_match(s) && s != "latest" {
        Ok(s.to_string())
    } else {
        Err("a Docker tag other than `latest`, e.g. v20260106".into())
    }
}

fn parse_registry(s: &str) -> Result<String, String> {
    PushTarget::parse(s).map(|_| s.to_string()).ok_or_else(|| {
        "REGISTRY/REPO, e.g. ghcr.io/OWNER/guix-matrix or 127.0.0.1:5000/guix-matrix".into()
    })
}

impl ReleaseArgs {
    pub async fn exec(self, ctx: &Context) -> Result<Exit, Error> {
        let h = Pipeline::new(ctx.matrix.clone(), ctx.options.clone()).await?;
        let tag = self
            .tag
            .clone()
            .unwrap_or_else(|| release::dated_tag(std::time::SystemTime::now()));
        let proving = release::proved(
            &h.engine,
            &h.matrix,
            &h.options.checkout.root,
            &self
                .report
                .iter()
                .map(|r| {
                    if r.is_dir() {
                        r.join("report.json")
                    } else {
                        r.clone()
                    }
                })
                .collect::<Vec<_>>(),
            release::Gate {
                require_all: self.require_all,
                unpulled: self.unpulled,
            },
        )
        .await?;
        let mut proved = proving.platforms;
        // A key that cannot sign is found before anything is written.
        let signer = self
            .sign_key
            .as_deref()
            .map(crate::release::trust::Signer::load)
            .transpose()?;
        // The revision the images were made from: the checkout's commit
        // unless one is given (GITHUB_SHA in a workflow).
        let revision = self.revision.clone().or_else(|| ctx.checkout.commit());
        let contents = release::contents::decide(
            &h.engine,
            &h.matrix,
            &h.options.checkout.root,
            &mut proved,
            &proving.tools,
            &release::contents::Meta {
                tag: &tag,
                source: self.source.as_deref(),
                revision: revision.as_deref(),
            },
        )
        .await?;
        for line in &contents.left_out {
            eprintln!("left out: {line}");
        }
        let registry = self
            .push
            .as_deref()
            .map(|t| PushTarget::parse(t).expect("checked by clap"));
        // The harness's login variables are for the registry pushed to
        // (unless GUIX_MATRIX_REGISTRY_HOST names another): no other sees them.
        if let Some(r) = &registry {
            crate::registry::auth::pushing_to(&r.host);
        }
        let shipped = release::ship(
            &h.engine,
            &proved,
            &release::Plan {
                dist: &self.dist,
                tag: &tag,
                annotations: &contents.annotations,
                signer: signer.as_ref(),
                probes: contents.probes.as_ref().map(|(i, p)| (i.as_str(), p)),
                push: registry.as_ref(),
                force: self.force,
                // The repository's path (a full REGISTRY/REPO is taken too).
                mount_from: self.mount_from.as_deref().map(|m| {
                    registry
                        .as_ref()
                        .and_then(|r| m.strip_prefix(&format!("{}/", r.host)))
                        .unwrap_or(m)
                }),
            },
        )
        .await?;
        let left: Vec<String> = h
            .matrix
            .platforms
            .iter()
            .filter(|p| !proved.iter().any(|q| q.platform.docker == p.docker))
            .map(|p| p.docker.clone())
            .collect();
        if let Some(path) = &self.notes {
            let pin = crate::pin::read(&ctx.checkout.channels())?;
            let about = release::notes::About {
                tag: &tag,
                pin: &pin,
                pushed_to: self.push.as_deref(),
                signed: signer.is_some(),
            };
            let text = release::notes::render(&about, &proved, &shipped);
            std::fs::write(path, text).map_err(|source| release::ReleaseError::Io {
                path: path.clone(),
                source,
            })?;
        }
        let out = Shipped::of(
            shipped,
            Said {
                tag: &tag,
                dist: &self.dist,
                signed: signer.is_some(),
                registry: registry.as_ref(),
                not_released: left,
            },
        );
        if !self.json {
            out.print_dist();
            out.print_push();
            println!(
                "took: export and compress {:.1} s, tarballs {:.1} s{}",
                out.seconds.export,
                out.seconds.dist,
                out.pushed
                    .as_ref()
                    .map(|p| format!(", push {:.1} s (at the same time)", p.seconds))
                    .unwrap_or_default()
            );
        }
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&out).expect("release json")
            );
        }
        if let Some(path) = std::env::var_os("GITHUB_OUTPUT") {
            out.github_output(std::path::Path::new(&path))?;
        }
        Ok(Exit::Success)
    }
}
