//! The release notes: what the release is (the pin, the Guix commits since the release its pull started from, each platform's Debian base date and image digest) and the lines that verify it, as `release --notes FILE` writes them for the GitHub release.

use super::gate::Proved;
use super::ship::Shipped;
use crate::base::mirror;

/// What the notes are about, beyond what shipped.
#[derive(Debug, Clone, Copy)]
pub struct About<'a> {
    pub tag: &'a str,
    /// The checkout's pin.
    pub pin: &'a str,
    /// `REGISTRY/REPO` when the release was pushed.
    pub pushed_to: Option<&'a str>,
    pub signed: bool,
}

/// The notes as Markdown.
pub fn render(about: &About<'_>, proved: &[Proved], shipped: &Shipped) -> String {
    let mut out = format!("# guix-matrix {}\n\n", about.tag);
    let platforms: Vec<&str> = proved.iter().map(|p| p.platform.docker.as_str()).collect();
    out.push_str(&format!(
        "Every check passed on {} on GNU Guix pulled to the pinned commit `{}`.\n\n",
        platforms.join(", "),
        about.pin
    ));
    out.push_str(&guix(about.pin, proved));
    out.push_str(
        "\n## Platforms\n\n| platform | Debian base of | image manifest |\n|---|---|---|\n",
    );
    for p in proved {
        let digest = shipped
            .platforms
            .iter()
            .find(|(d, _)| *d == p.platform.docker)
            .map_or_else(String::new, |(_, d)| d.to_string());
        let date = p.base_date.map_or("unknown".into(), mirror::day);
        out.push_str(&format!(
            "| {} | {date} | `{digest}` |\n",
            p.platform.docker
        ));
    }
    out.push_str(&verify(about, shipped));
    out
}

/// The Guix the release is: the pin, and the range since the release its
/// pull started from (the pull records where it started).
fn guix(pin: &str, proved: &[Proved]) -> String {
    let mut out = format!("## Guix\n\nPinned commit: `{pin}` (channels/channels.scm).\n");
    let mut starts: Vec<&str> = proved
        .iter()
        .filter_map(|p| p.pulled.as_ref().map(|got| got.from.as_str()))
        .collect();
    starts.sort_unstable();
    starts.dedup();
    match starts.as_slice() {
        [] => out.push_str("Shipped unpulled: the images run Debian's guix until `guix pull`.\n"),
        [one] => out.push_str(&format!(
            "Pulled from {one}: `git log {}..{pin}` in a Guix checkout lists what changed.\n",
            one.rsplit(' ').next().unwrap_or(one)
        )),
        many => out.push_str(&format!("Pulled from: {}.\n", many.join("; "))),
    }
    out
}

/// The lines that check the release, with the tools users have.
fn verify(about: &About<'_>, shipped: &Shipped) -> String {
    let sums = &shipped.dist.sums_digest;
    let mut out = String::from("\n## Verify\n\n```sh\n");
    if let (Some(repo), true) = (about.pushed_to, about.signed) {
        let reference = format!("{repo}:{}", about.tag);
        out.push_str(&format!(
            "cosign verify --key trust/release.pub --insecure-ignore-tlog {reference}\ncargo run -p harness -- verify {reference}\n"
        ));
    }
    if about.signed {
        out.push_str("cosign verify-blob --key trust/release.pub --signature SHA256SUMS.sig --insecure-ignore-tlog SHA256SUMS && sha256sum -c --ignore-missing SHA256SUMS\n");
    } else {
        out.push_str("sha256sum -c --ignore-missing SHA256SUMS\n");
    }
    out.push_str("```\n\n");
    out.push_str(&format!("SHA256SUMS is `{sums}`"));
    if let Some(repo) = about.pushed_to {
        out.push_str(&format!(
            "; the image is `{repo}:{}@{}`",
            about.tag, shipped.index
        ));
    }
    out.push_str(".\n");
    out
}
