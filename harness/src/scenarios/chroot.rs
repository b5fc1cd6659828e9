//! Isolated builds: chroot builds work natively and fail under qemu-user; the entry point's own choice (GUIX_MATRIX_CHROOT=auto) must follow where the leg runs.

use super::{fixtures_tar_with, kv, run_fixture, spec, Check};
use crate::error::Error;
use crate::pipeline::{Pipeline, Prepared};

pub async fn body(h: &Pipeline, p: &Prepared, c: &mut Check) -> Result<(), Error> {
    let probe = super::probe_for(h, p).await?;
    let tar = fixtures_tar_with(
        h,
        &["chroot.sh", "chroot.scm"],
        &[("readdir-probe", &probe)],
    )?;
    let run = spec(h, p, "chroot")
        .bash("/fixtures/chroot.sh")
        .upload(tar, "/");
    let out = run_fixture(h, c, &run).await?;
    let get = |k: &str| kv(&out.stdout, k).unwrap_or_default();
    let (chroot, plain, auto, flags) = (
        get("chroot"),
        get("no-chroot"),
        get("auto"),
        get("auto-flags"),
    );
    for (k, v) in [
        ("chroot", &chroot),
        ("no-chroot", &plain),
        ("auto", &auto),
        ("auto-flags", &flags),
    ] {
        c.fact(k, v);
    }
    let emulated = !p.placement.is_native();
    let runs = p.placement.summary();
    c.expect(plain.starts_with("ran "), || {
        format!("with --disable-chroot the builder did not run: `{plain}`")
    });
    c.expect(auto.starts_with("ran ") || (auto == "as no-chroot" && plain.starts_with("ran ")), || {
        format!("with the image's own choice (GUIX_MATRIX_CHROOT=auto) the builder did not run: `{auto}` (daemon flags `{flags}`)")
    });
    c.expect((flags == "--disable-chroot") == emulated, || {
        format!(
            "the entry point chose daemon flags `{flags}` but {} runs {runs} here; fix: its emulator() must see {}",
            p.platform.docker,
            if emulated { "the emulator" } else { "bash, not an emulator" }
        )
    });
    if chroot == "clone" {
        c.expect(emulated, || {
            format!(
                "chroot builds fail here (`clone: Invalid argument`, as under qemu-user), but the harness placed {} {runs}",
                p.platform.docker
            )
        });
    } else if let Some(n) = chroot.strip_prefix("ran ") {
        c.expect(!emulated, || {
            format!(
                "chroot builds work here, but the harness placed {} {runs} (builds would lose their isolation)",
                p.platform.docker
            )
        });
        // Inside the chroot the builder sees a near-empty / : proof it was isolated.
        let outside = plain
            .strip_prefix("ran ")
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        c.expect(
            n.parse::<u32>().is_ok_and(|inside| inside < outside),
            || {
                format!(
                    "the chroot builder saw {n} entries in /, not fewer than outside ({outside})"
                )
            },
        );
        c.expect(auto == chroot, || {
            format!("natively the image's own choice must isolate builds like chroot mode (`{chroot}`), it gave `{auto}`")
        });
    } else {
        c.expect(false, || {
            format!("chroot builds fail for another reason: `{chroot}` (the daemon needs --cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined)")
        });
    }
    Ok(())
}
