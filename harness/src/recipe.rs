//! What the tree builds for a platform: the Guix layer, the scripts on top of it (pulled or not), and the image's content hash, from the files alone.

use crate::engine::build::{self, BuildSpec, Inputs};
use crate::matrix::{Matrix, Platform};
use crate::names;
use crate::pull::By;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The readdir() probe image: every `probe_cc` of the matrix, on the native
/// platform's base of the probe suite, static probes under /probes. Its
/// content hash comes from the tree alone (the base's recipe, not its id),
/// so probes shipped with a release are known to be this tree's.
pub fn probe_spec(matrix: &Matrix, root: &Path, native: &Platform) -> BuildSpec {
    let d = &matrix.defaults;
    let base = if d.probe_suite == d.suite {
        names::base(d, native)
    } else {
        names::base_of_suite(d, native, &d.probe_suite)
    };
    let mut ccs: Vec<String> = matrix
        .platforms
        .iter()
        .filter_map(|p| p.probe_cc.clone())
        .collect();
    ccs.sort();
    ccs.dedup();
    BuildSpec {
        tag: names::probe(&matrix.defaults, native),
        platform: native.docker.clone(),
        dockerfile: "fixtures/probe.Dockerfile".into(),
        context: vec![
            "fixtures/probe.Dockerfile".into(),
            "fixtures/readdir-probe.c".into(),
        ],
        build_args: BTreeMap::from([
            ("BASE_IMAGE".to_string(), base),
            ("PROBE_CCS".to_string(), ccs.join(" ")),
        ]),
        unhashed_args: apt_args(d),
        depends_on: vec![format!(
            "debian {} {} {}",
            d.probe_suite, d.mirror, native.debian_arch
        )],
        extra_parts: BTreeMap::new(),
        labels: BTreeMap::new(),
        cache_from: vec![],
        no_cache: false,
        timeout: Duration::from_secs(1200),
        step: format!("{}: readdir probe image", native.docker),
        root: root.to_path_buf(),
    }
}

/// What the readdir() probes are, whatever machine built them: the content
/// hash of `probe_spec` without the builder's platform, base tag and
/// architecture (static binaries of the same source, cross-compilers and
/// suite). Probes shipped with a release made on amd64 are an arm64
/// engine's too.
pub fn probes_key(
    matrix: &Matrix,
    root: &Path,
    native: &Platform,
) -> Result<String, build::BuildError> {
    let d = &matrix.defaults;
    let mut spec = probe_spec(matrix, root, native);
    spec.build_args.remove("BASE_IMAGE");
    spec.depends_on = vec![format!("debian {} {}", d.probe_suite, d.mirror)];
    spec.platform = String::new();
    Ok(build::inputs(&spec)?.hash)
}

/// The emulator helper image: the qemu-user interpreters of the matrix's
/// `emulator` column and binfmt.sh, on the native platform's base. Like the
/// probes', its content hash comes from the tree alone, so a helper shipped
/// with a release is known to be this tree's before anything is built.
pub fn helper_spec(matrix: &Matrix, root: &Path, native: &Platform) -> BuildSpec {
    let d = &matrix.defaults;
    let mut emulators: Vec<&str> = matrix
        .platforms
        .iter()
        .map(|p| p.emulator.as_str())
        .collect();
    emulators.sort();
    emulators.dedup();
    BuildSpec {
        tag: names::binfmt_helper(d, native),
        platform: native.docker.clone(),
        dockerfile: "emulators/Dockerfile".into(),
        context: vec!["emulators".into()],
        build_args: BTreeMap::from([
            ("BASE_IMAGE".to_string(), names::base(d, native)),
            ("EMULATORS".to_string(), emulators.join(" ")),
        ]),
        unhashed_args: apt_args(d),
        depends_on: vec![format!(
            "debian {} {} {}",
            d.suite, d.mirror, native.debian_arch
        )],
        extra_parts: BTreeMap::new(),
        labels: BTreeMap::new(),
        cache_from: vec![],
        no_cache: false,
        timeout: Duration::from_secs(900),
        step: format!("{}: emulator helper image", native.docker),
        root: root.to_path_buf(),
    }
}

/// The Dockerfiles of the image, bottom first: the Guix layer, then the scripts.
pub const DOCKERFILES: [&str; 2] = ["Dockerfile", "scripts/Dockerfile"];

/// The build args every apt-get of the Dockerfiles takes: an expired
/// Release file is accepted only where matrix.toml's loader was told a test
/// needs it (GUIX_MATRIX_ALLOW_EXPIRED_MIRROR). Not hashed: the same tree.
fn apt_args(d: &crate::matrix::Defaults) -> BTreeMap<String, String> {
    BTreeMap::from([(
        "APT_CHECK_VALID_UNTIL".to_string(),
        (!d.expired_mirror_ok).to_string(),
    )])
}

/// `guix-matrix:arm-v7`.
pub fn image_tag(matrix: &Matrix, platform: &Platform) -> String {
    names::image(&matrix.defaults, platform)
}

/// The build of the Guix layer (base, Debian's guix, keys, pinned channel).
pub fn guix_spec(matrix: &Matrix, root: &Path, platform: &Platform) -> BuildSpec {
    let d = &matrix.defaults;
    BuildSpec {
        tag: names::guix_layer(d, platform),
        platform: platform.docker.clone(),
        dockerfile: DOCKERFILES[0].into(),
        context: ["Dockerfile", "substitutes", "channels"]
            .iter()
            .map(PathBuf::from)
            .collect(),
        build_args: BTreeMap::new(),
        // The base's tag names no content (its recipe below does): a rebuild
        // under other tags makes the same inputs.
        unhashed_args: apt_args(d)
            .into_iter()
            .chain([("BASE_IMAGE".to_string(), names::base(d, platform))])
            .collect(),
        // The base's recipe, not its id: the same tree has the same content
        // hash on every machine, whichever day its base was made.
        depends_on: vec![format!(
            "debian {} {} {} {}",
            d.base_image, d.suite, d.mirror, platform.debian_arch
        )],
        extra_parts: BTreeMap::new(),
        labels: BTreeMap::new(),
        cache_from: vec![],
        no_cache: false,
        timeout: platform.timeout(Duration::from_secs(d.step_timeout_secs)) * 2,
        step: format!("{}: build the Guix layer", platform.docker),
        root: root.to_path_buf(),
    }
}

/// The build of the scripts on `guix_image` as `tag`: its content hash
/// covers the Guix layer's inputs (`guix`) and who pulled it (`by`).
pub fn top_spec(
    matrix: &Matrix,
    root: &Path,
    platform: &Platform,
    guix: &Inputs,
    by: Option<By>,
) -> BuildSpec {
    let d = &matrix.defaults;
    let mut extra_parts: BTreeMap<String, String> = guix
        .parts
        .iter()
        .map(|(k, v)| match k.starts_with("file ") {
            true => (k.clone(), v.clone()),
            false => (format!("guix {k}"), v.clone()),
        })
        .collect();
    extra_parts.insert(
        "pull pulled-by".into(),
        build::sha(by.map_or("none".into(), |b| b.to_string()).as_bytes()),
    );
    BuildSpec {
        tag: image_tag(matrix, platform),
        platform: platform.docker.clone(),
        dockerfile: DOCKERFILES[1].into(),
        context: vec!["scripts".into()],
        build_args: BTreeMap::new(),
        unhashed_args: BTreeMap::from([("GUIX_IMAGE".to_string(), names::guix_layer(d, platform))]),
        depends_on: vec![],
        extra_parts,
        labels: BTreeMap::new(),
        cache_from: vec![],
        no_cache: false,
        timeout: platform.timeout(Duration::from_secs(d.step_timeout_secs)),
        step: format!("{}: build the image", platform.docker),
        root: root.to_path_buf(),
    }
}

/// What the tree at `root` builds for `platform`, pulled by `by` (None:
/// unpulled): the content hash and its parts, from the files alone (no
/// engine, no build). Equal on every machine for the same tree; `harness
/// matrix --json` prints it for CI cache keys.
pub fn inputs(
    matrix: &Matrix,
    root: &Path,
    platform: &Platform,
    by: Option<By>,
) -> Result<Inputs, build::BuildError> {
    let guix = build::inputs(&guix_spec(matrix, root, platform))?;
    build::inputs(&top_spec(matrix, root, platform, &guix, by))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probes' key is the same whichever platform built them, and not
    /// the probe image's own content hash (which names its builder).
    #[test]
    fn the_probes_key_does_not_depend_on_the_machine_that_built_them() {
        let checkout = crate::paths::Checkout::find().unwrap();
        let matrix = Matrix::load(checkout.matrix()).unwrap();
        let on = |docker: &str| matrix.find(docker).unwrap().clone();
        let (amd64, arm64) = (on("linux/amd64"), on("linux/arm64/v8"));
        let key = |p: &Platform| probes_key(&matrix, &checkout.root, p).unwrap();
        let image = |p: &Platform| {
            build::inputs(&probe_spec(&matrix, &checkout.root, p))
                .unwrap()
                .hash
        };
        assert_eq!(key(&amd64), key(&arm64));
        assert_ne!(image(&amd64), image(&arm64));
        assert_ne!(key(&amd64), image(&amd64));
    }
}
