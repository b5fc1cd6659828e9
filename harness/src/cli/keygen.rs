//! `harness keygen`: a key pair for signing releases.

use crate::error::{Error, Exit};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write: PREFIX.key (private, mode 0600, never overwritten)
    /// and PREFIX.pub (commit it under trust/ so checkouts trust it).
    #[arg(value_name = "PREFIX")]
    pub prefix: PathBuf,
}

impl KeygenArgs {
    pub fn exec(self) -> Result<Exit, Error> {
        let (private, public) = crate::release::trust::keygen(&self.prefix)?;
        println!(
            "private key: {} (keep it secret: the release workflow's secret GUIX_MATRIX_SIGNING_KEY; GUIX_MATRIX_SIGN_KEY or --sign-key names the file)",
            private.display()
        );
        println!(
            "public key:  {} (copy it into trust/ to trust what it signs)",
            public.display()
        );
        Ok(Exit::Success)
    }
}
