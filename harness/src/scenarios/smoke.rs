//! Smoke: the right machine, the image's Guix (the pulled commit, else Debian's 1.5.0), a daemon that answers and is gone afterwards.

use super::{fixtures_tar, kv, run_fixture, spec, Check};
use crate::error::Error;
use crate::pipeline::{Pipeline, Prepared};

pub async fn body(h: &Pipeline, p: &Prepared, c: &mut Check) -> Result<(), Error> {
    let run = spec(h, p, "smoke")
        .bash("/fixtures/smoke.sh")
        .upload(fixtures_tar(h, &["smoke.sh", "smoke.scm"])?, "/");
    let out = run_fixture(h, c, &run).await?;
    let want_version = super::guix_version_line(h, p);
    // What runs the container's shell, as the kernel says: bash natively,
    // else the emulator's interpreter (qemu-arm …); the harness's decision
    // must be what happened.
    let interpreter = match &p.emulator {
        Some(hd) => hd
            .interpreter
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string(),
        None if p.placement.is_native() => "bash".into(),
        None => p.placement.handler().unwrap_or_default().to_string(),
    };
    let facts = [
        ("interpreter", interpreter),
        ("uname-m", p.placement.uname_m.clone()),
        ("dpkg-arch", p.platform.debian_arch.clone()),
        ("guix-version", want_version),
        ("current-system", p.platform.guix_system.clone()),
        ("smoke-rc", "0".into()),
        ("daemons-left", "0".into()),
    ];
    for (key, want) in facts {
        let got = kv(&out.stdout, key).unwrap_or_default();
        c.fact(key, &got);
        c.expect(got == want, || {
            format!("{key}: expected `{want}`, got `{got}`")
        });
    }
    let store_path = kv(&out.stdout, "store-path").unwrap_or_default();
    c.fact("store-path", &store_path);
    c.expect(
        store_path.starts_with("/gnu/store/") && store_path.ends_with("-guix-matrix-smoke"),
        || format!("the daemon did not answer a store write (store-path=`{store_path}`)"),
    );
    c.fact("exit-code", out.exit_code);
    c.expect(out.exit_code == 0, || {
        format!("smoke script exited {}", out.exit_code)
    });
    Ok(())
}
