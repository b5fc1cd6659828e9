//! Every image and artifact name the harness gives, in one place: local tags per platform, registry tags, release file names.

use crate::matrix::{Defaults, Platform};

/// Label on every container, image and volume the harness creates.
pub const LABEL_MANAGED: &str = "io.guix-matrix.managed";
/// Label carrying the content hash of an image's inputs.
pub const LABEL_INPUTS: &str = "io.guix-matrix.inputs";
/// The inputs part by part (JSON), to say what changed between two images.
pub const LABEL_PARTS: &str = "io.guix-matrix.inputs.parts";
/// Label carrying the Docker platform an image or container is for.
pub const LABEL_PLATFORM: &str = "io.guix-matrix.platform";
/// Label saying where a base came from.
pub const LABEL_ORIGIN: &str = "io.guix-matrix.origin";
/// What the pull left, as JSON, on the pulled layer and every image built on it.
pub const LABEL_PULL: &str = "io.guix-matrix.pull";
/// `no`, or how and to which commit the image's Guix was pulled.
pub const LABEL_PULLED: &str = "io.guix-matrix.pulled";
/// The pulled layer's key: the Guix layer's inputs and how it was pulled.
pub const LABEL_PULL_KEY: &str = "io.guix-matrix.pull.key";
/// The digest of the base an image was built on (OCI annotation).
pub const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
/// The digest of the emulator helper shipped beside a platform's image.
pub const HELPER_DIGEST: &str = "io.guix-matrix.helper.digest";
/// When a base's Debian packages were current (RFC 3339): the mirror's
/// Release date it was built from.
pub const LABEL_BASE_DATE: &str = "io.guix-matrix.base.date";
/// The epoch an image was settled to and its inputs (see `epoch`): an image
/// whose label does not name its own inputs was never settled (its build
/// was cut short) and is settled before use.
pub const LABEL_EPOCH: &str = "io.guix-matrix.epoch";
/// The run a container belongs to (`HOST:PID:STARTED`).
pub const LABEL_RUN: &str = "io.guix-matrix.run";
/// A run's lease: the platform slugs it holds (on a volume that is the lease).
pub const LABEL_LEASE: &str = "io.guix-matrix.lease";
/// When a lease is dead unless renewed (unix seconds).
pub const LABEL_LEASE_EXPIRES: &str = "io.guix-matrix.lease.expires";
/// The release version an image or index names (OCI's standard annotation).
pub const VERSION: &str = "org.opencontainers.image.version";

/// The image a platform's legs check and a release ships: `guix-matrix:arm-v7`.
pub fn image(d: &Defaults, p: &Platform) -> String {
    format!("{}:{}", d.image, p.slug())
}

/// The Guix layer (base, Debian's guix, keys, pinned channel): `guix-matrix-guix:arm-v7`.
pub fn guix_layer(d: &Defaults, p: &Platform) -> String {
    format!("{}-guix:{}", d.image, p.slug())
}

/// The scripts on the unpulled Guix layer, where the pull step runs: `guix-matrix-unpulled:arm-v7`.
pub fn unpulled(d: &Defaults, p: &Platform) -> String {
    format!("{}-unpulled:{}", d.image, p.slug())
}

/// The committed result of the pull step: `guix-matrix-pulled:arm-v7`.
pub fn pulled(d: &Defaults, p: &Platform) -> String {
    format!("{}-pulled:{}", d.image, p.slug())
}

/// The Debian base a platform's image starts from: `guix-matrix-base:arm-v7`.
pub fn base(d: &Defaults, p: &Platform) -> String {
    format!("{}-base:{}", d.image, p.slug())
}

/// The same base from another Debian suite: `guix-matrix-base:amd64-bookworm`.
pub fn base_of_suite(d: &Defaults, p: &Platform, suite: &str) -> String {
    format!("{}-base:{}", d.image, suite_slug(p, suite))
}

/// The tag part of a platform's image from another suite: `amd64-bookworm`.
pub fn suite_slug(p: &Platform, suite: &str) -> String {
    format!("{}-{suite}", p.slug())
}

/// A published image fetched to be checked (`run --image`).
pub fn published(d: &Defaults, p: &Platform) -> String {
    format!("{}-published:{}", d.image, p.slug())
}

/// A release's image fetched to seed a build (`--from`).
pub fn from_release(d: &Defaults, p: &Platform) -> String {
    format!("{}-release:{}", d.image, p.slug())
}

/// A release's base fetched to seed a build, before it is made the local base.
pub fn from_release_base(d: &Defaults, p: &Platform) -> String {
    format!("{}-release-base:{}", d.image, p.slug())
}

/// The readdir() probes (one per cross compiler), made on `native`: `guix-matrix-probe:amd64`.
pub fn probe(d: &Defaults, native: &Platform) -> String {
    format!("{}-probe:{}", d.image, native.slug())
}

/// The binfmt_misc helper image of an engine of `native`'s architecture: `guix-matrix-binfmt:amd64`.
pub fn binfmt_helper(d: &Defaults, native: &Platform) -> String {
    format!("{}-binfmt:{}", d.image, native.slug())
}

/// A release's tarball of one platform's image: its OCI image layout,
/// which `docker load` also takes.
pub fn tarball(tag: &str, p: &Platform) -> String {
    format!("guix-matrix-{tag}-{}.tar", p.slug())
}

/// The base an image was built on, released beside it (for builds from the
/// release, not for users: `docker load` of it gives the base alone).
pub fn base_tarball(tag: &str, p: &Platform) -> String {
    format!("guix-matrix-base-{tag}-{}.tar", p.slug())
}

/// The emulator helper of the platform a release was made on, released
/// beside its images (a repro from the release on an empty engine of that
/// architecture loads it instead of building it).
pub fn helper_tarball(tag: &str, p: &Platform) -> String {
    format!("guix-matrix-binfmt-{tag}-{}.tar", p.slug())
}

/// A release's readdir() probes (static, one per cross compiler) with the
/// content hash of the recipe that built them.
pub fn probes_archive(tag: &str) -> String {
    format!("guix-matrix-probes-{tag}.tar")
}

/// Whether `name` is a release's probes archive.
pub fn is_probes_archive(name: &str) -> bool {
    name.starts_with("guix-matrix-probes-") && name.ends_with(".tar")
}

/// A release's multi-platform index: the bytes the registry holds under
/// the tag.
pub fn index_file(tag: &str) -> String {
    format!("guix-matrix-{tag}.index.json")
}

/// The release tag in an index file's name, if it is one.
pub fn tag_of_index_file(name: &str) -> Option<&str> {
    name.strip_prefix("guix-matrix-")?
        .strip_suffix(".index.json")
}

/// What the image is distributed under, as an SPDX expression: GNU Guix
/// (GPL-3.0-or-later), this project's scripts (Apache-2.0), and the Debian
/// base's packages, each under its own license as its
/// /usr/share/doc/*/copyright says (kept in the image).
pub const LICENSES: &str = "GPL-3.0-or-later AND Apache-2.0 AND LicenseRef-Debian-packages";
