//! The registry wing: the only code that speaks HTTP to registries — one repository's client, its logins, references and digests.

pub mod auth;
mod client;
pub mod reference;

pub use client::Client;
pub use reference::{Digest, Reference};

/// A manifest of any kind the release wing reads or writes.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The largest manifest read (the registry's own limit is 4 MiB).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// Why a request to the registry did not do what was asked.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct RegistryError {
    /// The request: `GET ghcr.io/o/r manifest v1`.
    pub what: String,
    pub message: String,
}

/// How a blob got to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// It was there already.
    Present,
    /// Mounted from another repository of the registry: nothing sent.
    Mounted,
    Uploaded,
}
