//! Every image and artifact name the harness gives, in one place: local tags per platform, registry tags, release file names.

use crate::matrix::{Defaults, Platform};

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
    format!("{}-{suite}", base(d, p))
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
