//! What the tree builds for a platform: the image's build (context, arguments, base) and its content hash, from the files alone.

use crate::base;
use crate::image;
use crate::matrix::{Matrix, Platform};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `guix-matrix:arm-v7`.
pub fn image_tag(matrix: &Matrix, platform: &Platform) -> String {
    format!("{}:{}", matrix.defaults.image, platform.slug())
}

/// The build of the Guix image for `platform` from the checkout at `root`,
/// on a base whose provenance is `provenance` (a label, not an input).
pub fn image_spec(
    matrix: &Matrix,
    root: &std::path::Path,
    platform: &Platform,
    provenance: &str,
) -> image::BuildSpec {
    let d = &matrix.defaults;
    image::BuildSpec {
        tag: image_tag(matrix, platform),
        platform: platform.docker.clone(),
        dockerfile: "Dockerfile".into(),
        context: ["Dockerfile", "substitutes", "channels", "scripts"]
            .iter()
            .map(PathBuf::from)
            .collect(),
        build_args: BTreeMap::from([("BASE_IMAGE".to_string(), base::base_tag(d, platform))]),
        unhashed_args: BTreeMap::from([("BASE_PROVENANCE".to_string(), provenance.to_string())]),
        // The base's recipe, not its id: the same tree has the same content
        // hash on every machine, whichever day its base was made.
        depends_on: vec![format!(
            "debian {} {} {} {}",
            d.base_image, d.suite, d.mirror, platform.debian_arch
        )],
        cache_from: vec![],
        timeout: platform.timeout(Duration::from_secs(d.step_timeout_secs)) * 2,
        step: format!("{}: build image", platform.docker),
        root: root.to_path_buf(),
    }
}

/// What the tree at `root` builds for `platform`: the content hash and its
/// parts, from the files alone (no engine, no build). Equal on every machine
/// for the same tree; `harness matrix --json` prints it for CI cache keys.
pub fn inputs(
    matrix: &Matrix,
    root: &std::path::Path,
    platform: &Platform,
) -> Result<image::Inputs, image::BuildError> {
    image::inputs(&image_spec(matrix, root, platform, ""))
}
