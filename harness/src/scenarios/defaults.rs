//! The image as users get it, nothing passed in: the daemon flags it chooses build with a real builder, every command traced, the substitute keys it trusts, `docker run IMAGE` a shell.

use super::{fixtures_tar_with, kv, run_fixture, spec, Check};
use crate::engine::run::RunSpec;
use crate::error::Error;
use crate::pipeline::{Pipeline, Prepared};
use std::collections::BTreeSet;

pub async fn body(h: &Pipeline, p: &Prepared, c: &mut Check) -> Result<(), Error> {
    build_with_baked_flags(h, p, c).await?;
    traced(h, p, c).await?;
    substitutes(h, p, c).await?;
    shell(h, p, c).await
}

/// A spec with the image's own entry point and no settings at all.
fn plain(h: &Pipeline, p: &Prepared, step: &str) -> RunSpec {
    let mut s = spec(h, p, step);
    s.env.clear();
    s
}

/// `docker run IMAGE guix repl defaults.scm`: a real builder, the flags the
/// image chooses where it runs (--disable-chroot only under an emulator).
async fn build_with_baked_flags(h: &Pipeline, p: &Prepared, c: &mut Check) -> Result<(), Error> {
    let probe = super::probe_for(h, p).await?;
    let tar = fixtures_tar_with(h, &["defaults.scm"], &[("readdir-probe", &probe)])?;
    let run = plain(h, p, "defaults: build")
        .cmd(["guix", "repl", "/fixtures/defaults.scm"])
        .upload(tar, "/");
    let out = run_fixture(h, c, &run).await?;
    let built = kv(&out.stdout, "built").unwrap_or_default();
    c.fact("build-rc", out.exit_code);
    c.expect(out.exit_code == 0 && built.ends_with("-guix-matrix-defaults"), || {
        let said = out
            .combined
            .lines()
            .find(|l| l.contains("clone: Invalid argument") || l.contains("error"))
            .unwrap_or("")
            .trim()
            .to_string();
        format!(
            "`docker run IMAGE guix build …` with a real builder fails with the daemon flags the image chose ({:?}; {} runs {} here; exit {}: `{said}`); fix: the entry point's chroot_flag()",
            image_daemon_args(&out.stdout),
            p.platform.docker,
            p.placement.summary(),
            out.exit_code,
        )
    });
    let chose = image_daemon_args(&out.stdout);
    c.fact("daemon-flags", &chose);
    c.expect(chose.contains("--disable-chroot") != p.placement.is_native(), || {
        format!(
            "with nothing passed in the image started guix-daemon with `{chose}`, but {} runs {} here (builds are isolated natively, --disable-chroot under an emulator)",
            p.platform.docker,
            p.placement.summary()
        )
    });
    Ok(())
}

/// The flags of the guix-daemon that ran, from its command line as
/// defaults.scm read it in /proc (`daemon-argv=`).
fn image_daemon_args(stdout: &str) -> String {
    kv(stdout, "daemon-argv")
        .map(|l| {
            l.split_whitespace()
                .filter(|w| {
                    w.starts_with("--")
                        && !w.starts_with("--build-users-group")
                        && !w.starts_with("--substitute-urls")
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Every command traced, and a failing one's trace shows where it failed.
async fn traced(h: &Pipeline, p: &Prepared, c: &mut Check) -> Result<(), Error> {
    let run = plain(h, p, "defaults: trace").cmd(["sh", "-c", "exit 3"]);
    let out = run_fixture(h, c, &run).await?;
    let ran = out.stderr.find("+ sh -c 'exit 3'");
    let failed = out.stderr.find("+ rc=3");
    c.fact(
        "trace",
        format!(
            "command traced: {}, failure traced: {}",
            ran.is_some(),
            failed.is_some()
        ),
    );
    c.expect(out.exit_code == 3, || {
        format!("the command's exit code 3 came back as {}", out.exit_code)
    });
    c.expect(matches!((ran, failed), (Some(a), Some(b)) if a < b), || {
        "the entry point's trace (set -x) must show the command and then where it failed (`+ rc=3`)"
            .into()
    });
    Ok(())
}

/// Prints the running guix-daemon's arguments, one a line (its
/// /proc/PID/cmdline: what runs, not what the entry point says it ran).
const DAEMON_ARGV: &str = r#"tr '\0' '\n' <"/proc/$GUIX_MATRIX_DAEMON_PID/cmdline""#;

/// The running daemon's `--substitute-urls=` value, from DAEMON_ARGV's lines.
fn daemon_urls(argv: &str) -> Option<&str> {
    argv.lines()
        .find_map(|l| l.strip_prefix("--substitute-urls="))
}

/// The keys in the image's ACL are exactly substitutes/*.pub; the running
/// daemon's servers are substitutes/urls; GUIX_SUBSTITUTE_URLS overrides them.
async fn substitutes(h: &Pipeline, p: &Prepared, c: &mut Check) -> Result<(), Error> {
    let script = format!("{DAEMON_ARGV}; echo '--- acl'; cat /etc/guix/acl");
    let run = plain(h, p, "defaults: urls and acl").cmd(["sh", "-c", script.as_str()]);
    let out = run_fixture(h, c, &run).await?;
    let (argv, acl) = out
        .stdout
        .split_once("--- acl")
        .unwrap_or((&out.stdout, ""));
    let trusted = keys(acl);
    let dir = h.options.checkout.root.join("substitutes");
    let mut wanted = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).map_err(|source| Error::Fixture {
        path: dir.clone(),
        source,
    })? {
        let path = entry
            .map_err(|source| Error::Fixture {
                path: dir.clone(),
                source,
            })?
            .path();
        if path.extension().is_some_and(|e| e == "pub") {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Fixture {
                path: path.clone(),
                source,
            })?;
            wanted.extend(keys(&text));
        }
    }
    c.fact("acl-keys", trusted.len());
    c.expect(!wanted.is_empty() && trusted == wanted, || {
        format!(
            "/etc/guix/acl must authorize exactly the keys of substitutes/*.pub: missing {:?}, not ours {:?}",
            wanted.difference(&trusted).collect::<Vec<_>>(),
            trusted.difference(&wanted).collect::<Vec<_>>()
        )
    });

    let urls = std::fs::read_to_string(dir.join("urls")).unwrap_or_default();
    let default: Vec<&str> = urls
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    let running: Vec<&str> = daemon_urls(argv)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    c.expect(running == default, || {
        format!(
            "the running guix-daemon's substitute servers are not substitutes/urls ({} servers): `{}`",
            default.len(),
            running.join(" ")
        )
    });
    let run = plain(h, p, "defaults: urls override")
        .env("GUIX_SUBSTITUTE_URLS=https://substitutes.example")
        .cmd(["sh", "-c", DAEMON_ARGV]);
    let out = run_fixture(h, c, &run).await?;
    let running = daemon_urls(&out.stdout).unwrap_or_default();
    c.expect(running.trim() == "https://substitutes.example", || {
        format!("GUIX_SUBSTITUTE_URLS does not override the running guix-daemon's substitute servers: `{running}`")
    });
    Ok(())
}

/// The Ed25519 public keys (`(q #HEX#)`) in a Guix ACL or key file.
pub fn keys(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\(q\s+#([0-9A-Fa-f]{64})#\)").expect("regex");
    re.captures_iter(text)
        .map(|c| c[1].to_uppercase())
        .collect()
}

/// `docker run -i IMAGE`, no command: the image's default command is a
/// shell where guix commands work.
async fn shell(h: &Pipeline, p: &Prepared, c: &mut Check) -> Result<(), Error> {
    let mut run = plain(h, p, "defaults: shell").stdin("guix --version\n");
    run.cmd.clear();
    let out = run_fixture(h, c, &run).await?;
    let version = out
        .stdout
        .lines()
        .find(|l| l.starts_with("guix (GNU Guix)"))
        .unwrap_or_default()
        .to_string();
    c.fact("shell-guix", &version);
    c.expect(out.exit_code == 0 && version == super::guix_version_line(h, p), || {
        format!("`docker run -i IMAGE` (no command) must give a shell where guix works: exit {}, `{version}`", out.exit_code)
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_keys_are_read_in_any_case() {
        let acl = "(acl (entry (public-key (ecc (curve Ed25519) (q #8D156F295D24B0D9A86FA5741A840FF2D24F60F7B6C4134814AD55625971B394#))) (tag (guix import))))";
        let k = keys(acl);
        assert_eq!(k.len(), 1);
        assert!(k.contains("8D156F295D24B0D9A86FA5741A840FF2D24F60F7B6C4134814AD55625971B394"));
        assert!(keys("(q #abc#)").is_empty());
    }

    #[test]
    fn daemon_flags_are_read_from_the_running_daemons_command_line() {
        let out = "daemon-argv=guix-daemon --build-users-group=guixbuild --substitute-urls=https://a https://b --disable-chroot \nbuilt=/gnu/store/x\n";
        assert_eq!(image_daemon_args(out), "--disable-chroot");
        // A trace line saying otherwise is not what ran.
        assert_eq!(
            image_daemon_args("+ guix-daemon --build-users-group=g --disable-chroot\n"),
            ""
        );
        assert_eq!(
            daemon_urls("guix-daemon\n--substitute-urls=https://a https://b\n"),
            Some("https://a https://b")
        );
    }
}
