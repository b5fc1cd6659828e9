//! The image's usage forms as users type them: the pulled Guix runs (also after `docker commit`), nested entry points, its own exit codes, failures that say why.

use super::{fixtures_tar, kv, run_fixture, spec, Check};
use crate::error::Error;
use crate::pipeline::{Pipeline, Prepared};

/// The exit code the entry point uses when guix-daemon exits before it answers.
pub const EXIT_DAEMON_DIED: &str = "121";

pub async fn body(h: &Pipeline, p: &Prepared, c: &mut Check) -> Result<(), Error> {
    let tar = fixtures_tar(h, &["usage.sh", "fake-pull.sh", "nondet.scm"])?;
    let run = spec(h, p, "usage")
        .bash("/fixtures/usage.sh")
        .upload(tar.clone(), "/");
    let out = run_fixture(h, c, &run).await?;
    let said = |key: &str| kv(&out.stdout, key).unwrap_or_default();
    in_one_container(c, &said);

    // `docker run IMAGE guix pull`, `docker commit`, run the result: the
    // pull is the fixture's, through the image's own entry point.
    let mut pull = spec(h, p, "usage: pull, then commit")
        .cmd(["/fixtures/fake-pull.sh"])
        .upload(tar, "/");
    pull.keep = true;
    let out = run_fixture(h, c, &pull).await?;
    let container = out.kept_container.clone().ok_or_else(|| Error::NotKept {
        step: "usage: pull, then commit".into(),
    })?;
    h.engine.track(&container, Some(&p.platform.docker));
    let tag = format!(
        "{}-usage:{}-{}",
        h.matrix.defaults.image,
        p.platform.slug(),
        std::process::id()
    );
    let committed = h.engine.commit(&container, &tag).await;
    if !h.options.keep {
        h.engine.remove_container(&container).await;
    }
    committed?;
    let result = after_commit(h, p, c, &tag).await;
    h.engine.remove_image(&tag).await;
    result
}

/// The forms run inside the first container (fixtures/usage.sh).
fn in_one_container(c: &mut Check, said: &dyn Fn(&str) -> String) {
    for key in [
        "nested-rc",
        "xdg-slash-rc",
        "daemon-fails-rc",
        "check-rc",
        "debian-which",
        "debian-version",
        "same-shell-versions",
        "pulled-which",
        "pulled-version",
        "pulled-profile",
    ] {
        c.fact(key, said(key));
    }
    c.expect(said("nested-rc") == "0", || {
        format!(
            "an entry point called inside another one broke the outer daemon (exit {}); it must reuse it",
            said("nested-rc")
        )
    });
    c.expect(!said("nested-reuse").is_empty(), || {
        "the nested entry point did not say it reuses the enclosing daemon".into()
    });
    c.expect(
        said("xdg-slash-rc") == "0" && said("xdg-slash-ran") == "command ran",
        || {
            format!(
                "XDG_CACHE_HOME=/root/.cache/ (the default, with a slash) stopped the command (exit {})",
                said("xdg-slash-rc")
            )
        },
    );
    c.expect(said("daemon-fails-rc") == EXIT_DAEMON_DIED, || {
        format!(
            "a daemon that cannot start must give the entry point's own exit code {EXIT_DAEMON_DIED}, not docker's 125; got {}",
            said("daemon-fails-rc")
        )
    });
    for key in ["no-urls-said", "urls-missing-said"] {
        c.expect(!said(key).is_empty(), || {
            format!("{key}: an empty or missing substitute list must be reported, not silently turn substitutes off")
        });
    }
    let shared = said("check-shared-on");
    if !shared.is_empty() {
        c.shared_on("build --check", &shared);
    } else {
        build_check(c, said);
    }
    c.expect(said("debian-which").contains("Debian's"), || {
        format!(
            "with nothing pulled the entry point must say it runs Debian's guix: `{}`",
            said("debian-which")
        )
    });
    c.expect(
        said("same-shell-versions") == "guix (GNU Guix) 1.5.0|guix (GNU Guix) 0-fixture-pulled",
        || {
            format!(
                "in `sh -c 'guix pull && guix …'` the second guix must be the pulled one: `{}`",
                said("same-shell-versions")
            )
        },
    );
    pulled_forms(c, said);
}

/// `guix build --check` of a non-deterministic fixture: it fails, and its log is reported.
fn build_check(c: &mut Check, said: &dyn Fn(&str) -> String) {
    c.expect(said("build-rc") == "0", || {
        format!(
            "the non-deterministic fixture did not build (exit {})",
            said("build-rc")
        )
    });
    c.expect(
        said("check-rc") == "1"
            && said("check-log-printed") == "1"
            && said("check-log-says") == "building guix-matrix-nondet",
        || {
            format!(
                "`guix build --check` failed (exit {}, `{}`) but its build log was not reported (printed {} log(s))",
                said("check-rc"),
                said("check-error"),
                said("check-log-printed")
            )
        },
    );
}

/// After a pull: the pulled guix and guix-daemon, with the profile sourced.
fn pulled_forms(c: &mut Check, said: &dyn Fn(&str) -> String) {
    c.expect(
        said("pulled-version") == "guix (GNU Guix) 0-fixture-pulled"
            && said("pulled-which").contains("the pulled generation")
            && !said("pulled-daemon").is_empty()
            && said("pulled-profile") == "sourced",
        || {
            format!(
                "after a pull the entry point must run the pulled guix and guix-daemon with its profile sourced: version `{}`, said `{}`, daemon `{}`, profile `{}`",
                said("pulled-version"),
                said("pulled-which"),
                said("pulled-daemon"),
                said("pulled-profile")
            )
        },
    );
}

/// The committed image, run the two ways users run it: the entry point with
/// nothing passed in, and `--entrypoint bash -c`.
async fn after_commit(h: &Pipeline, p: &Prepared, c: &mut Check, tag: &str) -> Result<(), Error> {
    let mut plain = spec(h, p, "usage: committed image").cmd(["guix", "--version"]);
    plain.image = tag.to_string();
    plain.keep = false;
    let out = run_fixture(h, c, &plain).await?;
    let version = out.stdout.lines().next().unwrap_or_default().to_string();
    c.fact("committed-version", &version);
    c.expect(
        out.exit_code == 0
            && version == "guix (GNU Guix) 0-fixture-pulled"
            && out.stderr.contains("the pulled guix-daemon runs"),
        || {
            format!(
                "`docker run COMMITTED guix --version` must run the pulled guix and guix-daemon: exit {}, `{version}`",
                out.exit_code
            )
        },
    );

    let mut bash = spec(h, p, "usage: committed image, bash")
        .bash("guix --version | head -n1; echo \"profile=${GUIX_MATRIX_FIXTURE_PROFILE:-not sourced}\"; /entry-point.sh guix --version");
    bash.image = tag.to_string();
    bash.keep = false;
    let out = run_fixture(h, c, &bash).await?;
    let versions: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("guix (GNU Guix)"))
        .collect();
    let profile = kv(&out.stdout, "profile").unwrap_or_default();
    c.fact("committed-bash-versions", versions.join("|"));
    c.fact("committed-bash-profile", &profile);
    c.expect(
        out.exit_code == 0
            && versions == ["guix (GNU Guix) 0-fixture-pulled"; 2]
            && profile == "sourced",
        || {
            format!(
                "`docker run --entrypoint bash COMMITTED -c …` must find the pulled guix, with its profile, and through /entry-point.sh too: exit {}, versions {versions:?}, profile `{profile}`",
                out.exit_code
            )
        },
    );
    Ok(())
}
