//! Pinning: `guix pull` checks out the pinned commit, not the branch head, and keeps the image's pin.

use super::{fixtures_tar, kv, run_fixture, spec, Check};
use crate::error::Error;
use crate::pipeline::{Pipeline, Prepared};

/// The commit pinned in the checkout's channels/channels.scm.
pub fn repo_pin(h: &Pipeline) -> Result<String, crate::pin::PinError> {
    crate::pin::read(&h.options.checkout.channels())
}

/// Offline pinning with a fixture channel, and the image's own pin.
pub async fn body(h: &Pipeline, p: &Prepared, c: &mut Check) -> Result<(), Error> {
    let want_pin = repo_pin(h)?;
    let mut run = spec(h, p, "pin")
        .bash("/fixtures/pin.sh")
        .upload(fixtures_tar(h, &["pin.sh", "channel.sh"])?, "/");
    if p.placement.cache_tmpfs {
        run = run.tmpfs("/root/.cache/guix", "rw,exec,size=256m");
    }
    let out = run_fixture(h, c, &run).await?;
    let get = |k: &str| kv(&out.stdout, k).unwrap_or_default();
    let (pinned, head, checkout) = (get("pinned"), get("branch-head"), get("checkout"));
    for (k, v) in [
        ("pinned", &pinned),
        ("branch-head", &head),
        ("checkout", &checkout),
    ] {
        c.fact(k, v);
    }
    c.expect(
        pinned.len() == 40 && head.len() == 40 && pinned != head,
        || {
            format!(
                "the fixture channel did not get two commits (pinned `{pinned}`, head `{head}`)"
            )
        },
    );
    c.expect(checkout == pinned, || {
        format!("guix pull checked out `{checkout}`, not the pinned commit `{pinned}` (branch head `{head}`)")
    });
    let said: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("said="))
        .map(str::to_string)
        .collect();
    c.expect(
        said.iter().any(|l| {
            l.contains("Updating channel 'guix' from Git repository at 'file:///srv/channel'")
        }),
        || format!("guix pull did not say it updated the channel from the fixture: {said:?}"),
    );
    c.expect(
        said.iter().any(|l| {
            l.starts_with("guix-matrix: pin check: channel 'guix' at ") && l.ends_with(": ok")
        }),
        || format!("the entry point's pin check did not pass the sound pin: {said:?}"),
    );
    c.transcript(said.join("\n"));

    let (image_pin, wanted) = (get("image-pin"), get("url-pull-wanted"));
    c.fact("image-pin", &image_pin);
    c.fact("url-pull-wanted", &wanted);
    c.expect(image_pin == want_pin, || {
        format!("the image pins `{image_pin}` but channels/channels.scm pins `{want_pin}` (rebuild the image)")
    });
    match get_shared(&get) {
        Some(on) => c.shared_on("url-pull", &on),
        None => c.expect(wanted == want_pin, || {
            format!("`guix pull --url=<mirror>` asked for `{wanted}`, not the pinned `{want_pin}`")
        }),
    }
    Ok(())
}

/// The platform that ran `guix pull --url` for this run, when not this one.
fn get_shared(get: &dyn Fn(&str) -> String) -> Option<String> {
    Some(get("url-pull-shared-on")).filter(|on| !on.is_empty())
}
