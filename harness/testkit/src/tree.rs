//! Copies of a checkout for tests and benchmarks that change it: the named files and folders, nothing else.

use std::path::{Path, PathBuf};

/// What the image is built from, and matrix.toml: the parts a copy that
/// builds images needs (a test adds the folders its runs read).
pub const IMAGE_INPUTS: [&str; 5] = [
    "Dockerfile",
    "matrix.toml",
    "substitutes",
    "channels",
    "scripts",
];

/// Copies `parts` (files or folders, relative) of the checkout at `root` to `to`.
pub fn copy(root: &Path, to: &Path, parts: &[&str]) {
    let mut stack: Vec<PathBuf> = parts.iter().map(PathBuf::from).collect();
    while let Some(rel) = stack.pop() {
        let from = root.join(&rel);
        if from.is_dir() {
            std::fs::create_dir_all(to.join(&rel)).unwrap();
            for e in std::fs::read_dir(&from).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        } else {
            std::fs::copy(&from, to.join(&rel)).unwrap();
        }
    }
}
