//! One release: its images staged once, then the directory and the registry written from the same blobs at the same time.

use super::dist::{write_dist, Dist};
use super::gate::Proved;
use super::oci::{stage, Labels};
use super::push::{push, PushTarget, Pushed};
use super::ReleaseError;
use crate::engine::Engine;
use crate::matrix::Platform;
use crate::registry::Digest;
use crate::release::trust::Signer;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

// The annotation (and label) naming a release's version.
use crate::names::VERSION;

/// What to release, and where.
pub struct Plan<'a> {
    pub dist: &'a Path,
    pub tag: &'a str,
    /// The index's annotations (the OCI ones are also each image's labels).
    pub annotations: &'a BTreeMap<String, String>,
    pub signer: Option<&'a Signer>,
    /// The readdir() probes and their recipe's content hash.
    pub probes: Option<(&'a str, &'a HashMap<String, Vec<u8>>)>,
    pub push: Option<&'a PushTarget>,
    /// Overwrite a tag that holds other content.
    pub force: bool,
    /// Another repository of the same registry to mount blobs from.
    pub mount_from: Option<&'a str>,
}

/// What a release wrote and pushed.
#[derive(Debug)]
pub struct Shipped {
    pub dist: Dist,
    pub pushed: Option<Pushed>,
    /// The multi-platform index (the file, and the registry's tag).
    pub index: Digest,
    /// Each platform's image manifest: in its tarball, the index and the registry.
    pub platforms: Vec<(String, Digest)>,
    /// Seconds spent exporting and compressing.
    pub export_seconds: f64,
}

/// Stages `proved` once, then writes the release directory and (when asked)
/// pushes to the registry, both from the staged blobs.
pub async fn ship(
    engine: &Engine,
    proved: &[Proved],
    plan: &Plan<'_>,
) -> Result<Shipped, ReleaseError> {
    // The base's published name: by digest in the registry it goes to,
    // else its tarball beside the image.
    let base_name = |p: &Platform, d: &Digest| match plan.push {
        Some(r) => format!("{}/{}@{d}", r.host, r.repo),
        None => crate::names::base_tarball(plan.tag, p),
    };
    // A release names its version, whatever else it says: the tag is what
    // a signature and a reader bind it to (no rollback under another tag).
    let mut annotations = plan.annotations.clone();
    annotations.insert(VERSION.into(), plan.tag.to_string());
    let staging = stage(
        engine,
        proved,
        plan.dist,
        &Labels {
            annotations: &annotations,
            base_name: &base_name,
        },
    )
    .await?;
    let write = write_dist(&staging, plan.dist, plan.tag, plan.signer, plan.probes);
    let pushed = async {
        match plan.push {
            Some(r) => push(
                &staging,
                r,
                plan.tag,
                plan.force,
                plan.signer,
                plan.mount_from,
            )
            .await
            .map(Some),
            None => Ok(None),
        }
    };
    let (dist, pushed) = tokio::try_join!(write, pushed)?;
    Ok(Shipped {
        dist,
        pushed,
        index: staging.index_digest(),
        platforms: staging
            .platforms
            .iter()
            .map(|sp| (sp.platform.docker.clone(), sp.image.digest()))
            .collect(),
        export_seconds: staging.seconds,
    })
}
