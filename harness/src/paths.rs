//! Where the checkout is: found from the current directory upwards (as cargo finds Cargo.toml), or given.

use std::path::{Path, PathBuf};

/// A guix-matrix checkout: the directory that holds matrix.toml and the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("no guix-matrix checkout in {from} or above it (looked for matrix.toml next to a Dockerfile)")]
    NotFound { from: PathBuf },
    #[error("{root} is not a guix-matrix checkout: it has no {missing}")]
    NotACheckout {
        root: PathBuf,
        missing: &'static str,
    },
}

impl PathError {
    pub fn fix(&self) -> Option<String> {
        Some("run the harness from inside a guix-matrix checkout, or pass --root DIR (GUIX_MATRIX_ROOT)".into())
    }
}

impl Checkout {
    /// The git commit the checkout is at (`.git/HEAD`, its ref loose or
    /// packed), when it is a git work tree.
    pub fn commit(&self) -> Option<String> {
        let git = self.root.join(".git");
        let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
        let head = head.trim();
        let id = match head.strip_prefix("ref: ") {
            None => head.to_string(),
            Some(name) => match std::fs::read_to_string(git.join(name)) {
                Ok(id) => id.trim().to_string(),
                Err(_) => std::fs::read_to_string(git.join("packed-refs"))
                    .ok()?
                    .lines()
                    .find_map(|l| l.strip_suffix(name).map(|id| id.trim().to_string()))?,
            },
        };
        (id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
    }

    /// The checkout at `root`, which must hold matrix.toml and a Dockerfile.
    pub fn at(root: impl Into<PathBuf>) -> Result<Self, PathError> {
        let root = root.into();
        for missing in ["matrix.toml", "Dockerfile"] {
            if !root.join(missing).is_file() {
                return Err(PathError::NotACheckout { root, missing });
            }
        }
        let root = root.canonicalize().unwrap_or(root);
        Ok(Checkout { root })
    }

    /// The nearest checkout at or above `dir`.
    pub fn find_from(dir: &Path) -> Result<Self, PathError> {
        dir.ancestors()
            .find_map(|d| Checkout::at(d).ok())
            .ok_or_else(|| PathError::NotFound {
                from: dir.to_path_buf(),
            })
    }

    /// The nearest checkout at or above the current directory.
    pub fn find() -> Result<Self, PathError> {
        let cwd = std::env::current_dir().map_err(|_| PathError::NotFound {
            from: PathBuf::from("."),
        })?;
        Self::find_from(&cwd)
    }

    pub fn matrix(&self) -> PathBuf {
        self.root.join("matrix.toml")
    }

    /// The guix channel pin.
    pub fn channels(&self) -> PathBuf {
        self.root.join("channels/channels.scm")
    }

    /// The public keys a release may be signed with (`*.pub`).
    pub fn trust(&self) -> PathBuf {
        self.root.join("trust")
    }

    pub fn fixtures(&self) -> PathBuf {
        self.root.join("fixtures")
    }

    pub fn workflows(&self) -> PathBuf {
        self.root.join(".github/workflows")
    }
}

/// `path` opened, if it is a regular file of at most `max` bytes: never a
/// device, a pipe or a file that does not end.
pub fn regular(path: &Path, max: u64) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: opening a pipe must not wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file; refused"));
    }
    if meta.len() > max {
        return Err(std::io::Error::other(format!(
            "{} bytes, more than the {max} it may have; refused",
            meta.len()
        )));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_from_any_directory_below_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("matrix.toml"), "").unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "").unwrap();
        let deep = dir.path().join("harness/src");
        std::fs::create_dir_all(&deep).unwrap();
        let found = Checkout::find_from(&deep).unwrap();
        assert_eq!(found.root, dir.path().canonicalize().unwrap());
    }

    #[test]
    fn outside_a_checkout_the_error_says_where_it_looked_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = Checkout::find_from(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
        assert!(err.fix().unwrap().contains("--root"));
        // matrix.toml alone is not a checkout.
        std::fs::write(dir.path().join("matrix.toml"), "").unwrap();
        let err = Checkout::at(dir.path()).unwrap_err();
        assert!(err.to_string().contains("no Dockerfile"), "{err}");
    }
}
