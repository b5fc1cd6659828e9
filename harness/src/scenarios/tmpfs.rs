//! The tmpfs workaround: readdir() EOVERFLOW where the placement says so (32-bit under qemu), and none with the cache on tmpfs.

use super::{fixtures_tar_with, kv, spec, Check};
use crate::error::Error;
use crate::pipeline::{Pipeline, Prepared};

const EOVERFLOW: &str = "Value too large for defined data type";

pub async fn body(h: &Pipeline, p: &Prepared, c: &mut Check) -> Result<(), Error> {
    let probe = super::probe_for(h, p).await?;
    let tar = fixtures_tar_with(h, &["tmpfs.sh"], &[("readdir-probe", &probe)])?;
    // The writable layer and the entry point's XDG_CACHE_HOME route.
    let xdg = spec(h, p, "tmpfs (xdg route)")
        .bash("/fixtures/tmpfs.sh")
        .upload(tar.clone(), "/")
        .tmpfs("/tmp/guix-cache", "rw,exec,size=64m");
    // The seed's route: the whole cache on tmpfs.
    let seed = spec(h, p, "tmpfs (seed route)")
        .bash("/fixtures/tmpfs.sh")
        .upload(tar, "/")
        .env("TMPFS_SEED=1")
        .tmpfs("/root/.cache/guix", "rw,exec,size=64m");
    let seed = super::run_fixture(h, c, &seed).await?;
    let xdg = super::run_fixture(h, c, &xdg).await?;
    let text = format!("{}{}", xdg.stdout, seed.stdout);
    let get = |k: &str| kv(&text, k).unwrap_or_default();
    let writable = get("writable-layer");
    for k in [
        "writable-layer",
        "writable-layer-fs",
        "seed-tmpfs",
        "xdg-tmpfs",
        "xdg-marker",
        "copied-back",
    ] {
        c.fact(k, get(k));
    }
    let bug_seen = writable != "ok";
    c.expect(bug_seen == p.placement.cache_tmpfs, || {
        format!(
            "{} runs {} here and matrix.toml says cache_tmpfs = {} (so the workaround is {}), but readdir() on the writable layer gave `{writable}`",
            p.platform.docker,
            p.placement.summary(),
            p.platform.cache_tmpfs,
            if p.placement.cache_tmpfs { "needed" } else { "not needed" },
        )
    });
    c.expect(!bug_seen || writable == EOVERFLOW, || {
        format!("readdir() failed, but not with EOVERFLOW: `{writable}`")
    });
    c.expect(get("seed-tmpfs") == "ok", || {
        format!(
            "with the cache on tmpfs (seed route) readdir() gave `{}`",
            get("seed-tmpfs")
        )
    });
    c.expect(get("xdg-tmpfs") == "ok", || {
        format!(
            "with XDG_CACHE_HOME on tmpfs readdir() gave `{}`",
            get("xdg-tmpfs")
        )
    });
    c.expect(get("xdg-marker") == "before", || {
        "the entry point did not copy the image's cache into XDG_CACHE_HOME".into()
    });
    c.expect(get("copied-back") == "written-inside", || {
        "what the command wrote to XDG_CACHE_HOME was not copied back".into()
    });
    Ok(())
}
