//! `harness verify`: what vouches for a release, checked without fetching its images.

use super::{Context, TrustKeys, Workspace};
use crate::error::{Error, Exit};
use crate::release::source::Source;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The release: a directory (DIR, or DIR@sha256:… pinning its SHA256SUMS)
    /// or a registry reference (REF, or REF@sha256:… pinning its index).
    #[arg(value_name = "DIR|REF", value_parser = crate::release::source::parse_arg)]
    pub source: Source,
    #[command(flatten)]
    pub trust: TrustKeys,
    /// Print what vouches for it as JSON (`{"version": 1, "source", "vouched", "key", "digest", "release"}`).
    #[arg(long, help_heading = "Output")]
    pub json: bool,
    #[command(flatten)]
    pub workspace: Workspace,
}

impl VerifyArgs {
    pub async fn exec(self, ctx: &Context) -> Result<Exit, Error> {
        let keys = self.trust.load(ctx)?;
        let release = crate::release::open::open(&self.source, &keys).await?;
        if self.json {
            use crate::release::trust::Vouch;
            let (vouched, key) = match &release.vouched.by {
                Vouch::Pinned(_) => ("pinned", None),
                Vouch::Signed { key } => ("signed", Some(key.clone())),
            };
            let out = serde_json::json!({
                "version": 1,
                "source": self.source.to_string(),
                "vouched": vouched,
                "key": key,
                "digest": release.vouched.digest.to_string(),
                "release": release.vouched.version(),
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&out).expect("verify json")
            );
            return Ok(Exit::Success);
        }
        println!(
            "{}: verified, {} (its {} is {}); version {}",
            self.source,
            release.vouched.by,
            match self.source {
                Source::Dir { .. } => crate::release::trust::SUMS,
                Source::Registry { .. } => "index",
            },
            release.vouched.digest,
            release.vouched.version().as_deref().unwrap_or("unnamed"),
        );
        Ok(Exit::Success)
    }
}
