//! Daemon flags: chroot builds work natively and fail under qemu-user; matrix.toml must agree.

use super::{fixtures_tar_with, kv, run_fixture, spec, Check};
use crate::error::Error;
use crate::harness::{Harness, Prepared};

pub async fn body(h: &Harness, p: &Prepared, c: &mut Check) -> Result<(), Error> {
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
    let (chroot, plain) = (
        kv(&out.stdout, "chroot").unwrap_or_default(),
        kv(&out.stdout, "no-chroot").unwrap_or_default(),
    );
    c.fact("chroot", &chroot);
    c.fact("no-chroot", &plain);
    let disabled = p
        .platform
        .daemon_args
        .iter()
        .any(|a| a == "--disable-chroot");
    c.expect(plain.starts_with("ran "), || {
        format!("with --disable-chroot the builder did not run: `{plain}`")
    });
    if chroot == "clone" {
        c.expect(disabled, || {
            format!(
                "chroot builds fail here (`clone: Invalid argument`, qemu-user cannot clone into new namespaces) but matrix.toml gives {} daemon_args = {:?}; fix: add \"--disable-chroot\"",
                p.platform.docker, p.platform.daemon_args
            )
        });
    } else if let Some(n) = chroot.strip_prefix("ran ") {
        c.expect(!disabled, || {
            format!(
                "chroot builds work on {} but matrix.toml disables them (daemon_args = {:?}); fix: remove \"--disable-chroot\" so builds stay isolated",
                p.platform.docker, p.platform.daemon_args
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
    } else {
        c.expect(false, || {
            format!("chroot builds fail for another reason: `{chroot}` (the daemon needs --cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined)")
        });
    }
    Ok(())
}
