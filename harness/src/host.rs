//! Facts of the machine the harness runs on: free disk, programs on PATH, binfmt_misc.

use std::path::{Path, PathBuf};

/// Where the kernel's binfmt_misc handlers live.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// Free bytes on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// The path of `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Whether binfmt_misc is mounted on this host.
pub fn binfmt_mounted() -> bool {
    Path::new(BINFMT_MISC).join("register").exists()
}

/// The kernel's entry for handler `name` (empty when it is not registered).
pub fn binfmt_entry(name: &str) -> String {
    std::fs::read_to_string(Path::new(BINFMT_MISC).join(name)).unwrap_or_default()
}
