//! The pulled image: `guix describe` names the pin, every usage form runs the pulled guix and guix-daemon, and a second `guix pull` stays on the pin.

use super::{fixtures_tar, kv, run_fixture, spec, Check};
use crate::error::Error;
use crate::pipeline::{Pipeline, Prepared};
use crate::pull::{By, Stage};

const PULLED_GUIX: &str = "/root/.config/guix/current/bin/guix";

pub async fn body(h: &Pipeline, p: &Prepared, c: &mut Check) -> Result<(), Error> {
    let pulled = match &p.pull {
        Stage::Skipped { why } => {
            c.skip_because(why);
            return Ok(());
        }
        Stage::Pulled(pulled) | Stage::Kept(pulled) => pulled.clone(),
    };
    let pin = super::pin::repo_pin(h)?;
    let mut run = spec(h, p, "pulled")
        .bash("/fixtures/pulled.sh")
        .upload(fixtures_tar(h, &["pulled.sh"])?, "/");
    // The second pull is the real one online; the stand-in's offline.
    run.network_none = pulled.by == By::StandIn;
    if p.placement.cache_tmpfs {
        run = run.tmpfs("/root/.cache/guix", "rw,exec,size=2g");
    }
    let out = run_fixture(h, c, &run).await?;
    let said = |k: &str| kv(&out.stdout, k).unwrap_or_default();
    c.fact("pulled-by", pulled.by.to_string());
    c.fact("pulled-from", &pulled.from);
    for k in [
        "describe-commit",
        "entry-guix",
        "bash-guix",
        "login-guix",
        "sh-guix",
        "version",
        "daemon-exe",
        "daemon-cmdline",
        "daemon-which",
        "pulled-daemon",
        "second-pull-rc",
        "second-commit",
    ] {
        c.fact(k, said(k));
    }
    c.expect(said("describe-commit") == pin, || {
        format!(
            "guix describe names `{}`, not the checkout's pin {pin}",
            said("describe-commit")
        )
    });
    c.expect(pulled.commit == pin, || {
        format!(
            "the image's pull label names {}, not the checkout's pin {pin}",
            pulled.commit
        )
    });
    for form in ["entry-guix", "bash-guix", "login-guix", "sh-guix"] {
        c.expect(said(form) == PULLED_GUIX, || {
            format!(
                "{form}: `command -v guix` is `{}`, not the pulled generation's {PULLED_GUIX}",
                said(form)
            )
        });
    }
    c.expect(said("version") == format!("guix (GNU Guix) {pin}"), || {
        format!(
            "guix --version says `{}`, not the pinned commit",
            said("version")
        )
    });
    // What runs, not what the entry point says it started: the running
    // daemon's executable is the pulled generation's own program, in the
    // store (a real pull's and the stand-in's alike), not Debian's.
    let (exe, own) = (said("daemon-exe"), said("pulled-daemon"));
    c.expect(
        !exe.is_empty() && exe == own && own.starts_with("/gnu/store/"),
        || {
            format!(
                "the running guix-daemon is `{exe}` (cmdline `{}`), not the pulled generation's `{own}`",
                said("daemon-cmdline")
            )
        },
    );
    c.expect(
        said("second-pull-rc") == "0" && said("second-commit") == pin,
        || {
            format!(
                "a second `guix pull` did not stay on the pin: exit {}, then at `{}`",
                said("second-pull-rc"),
                said("second-commit")
            )
        },
    );
    let transcript: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("second-pull-said="))
        .collect();
    c.transcript(transcript.join("\n"));
    Ok(())
}
