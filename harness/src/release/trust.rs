//! What vouches for a release: a digest the caller pins, or a cosign-compatible signature by a key the checkout trusts (`trust/*.pub`, `--trust-key`) — never its own labels or checksums.

use crate::registry::{Client, RegistryError};
use crate::registry::{Digest, Reference};
use crate::release::source::Source;
use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use std::fmt;
use std::path::{Path, PathBuf};

/// A release directory's checksums and their signature.
pub const SUMS: &str = "SHA256SUMS";
pub const SUMS_SIG: &str = "SHA256SUMS.sig";

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{source_}: unverified: {why}")]
    Unverified { source_: String, why: String },
    #[error("{source_}: not what it was vouched for: {why}; it was not used")]
    Tampered { source_: String, why: String },
    #[error("{path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl TrustError {
    /// Whether an I/O failure is about a path the user gave (missing, or
    /// one that would be overwritten), not about the machine.
    pub fn is_users(e: &std::io::Error) -> bool {
        matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::AlreadyExists
        )
    }

    /// What to do about it.
    pub fn fix(&self) -> Option<String> {
        Some(match self {
            TrustError::Unverified { .. } => "pin the release's digest (DIR@sha256:… is the sha256 of its SHA256SUMS; REF@sha256:… its index, as `harness release` prints them), or trust the key that signed it (--trust-key FILE, or a .pub in trust/)".into(),
            TrustError::Tampered { .. } => "download the release again from where it was published; never use one that does not match its pin or signature".into(),
            TrustError::Key { .. } => "a key is a PEM file: an ECDSA P-256 public key (trust) or its PKCS#8 private key (signing), as `harness keygen` writes them".into(),
            TrustError::Io { source, path } => match source.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "check the path ({} is not there): a release directory holds SHA256SUMS (`harness release --dist DIR`), a key is a PEM file (`harness keygen PREFIX`)",
                    path.display()
                ),
                std::io::ErrorKind::AlreadyExists => format!(
                    "{} exists and is never overwritten: give another PREFIX, or move the old key pair away first",
                    path.display()
                ),
                _ => return None,
            },
            TrustError::Registry(_) => "check the reference and that the registry answers".into(),
        })
    }
}

/// A public key the checkout trusts, named by its file.
#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    key: VerifyingKey,
}

/// The keys a release may be signed with.
#[derive(Debug, Clone, Default)]
pub struct Keys(Vec<Key>);

impl Keys {
    /// Every `*.pub` in `dir` (the checkout's `trust/`, which may be
    /// missing), then each of `extra`.
    pub fn load(dir: &Path, extra: &[PathBuf]) -> Result<Keys, TrustError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "pub"))
            .collect();
        files.sort();
        files.extend(extra.iter().cloned());
        let keys = files
            .iter()
            .map(|path| {
                let text = read_small(path, 64 << 10).map_err(|source| TrustError::Io {
                    path: path.clone(),
                    source,
                })?;
                let key =
                    VerifyingKey::from_public_key_pem(&text).map_err(|e| TrustError::Key {
                        path: path.clone(),
                        why: format!("not an ECDSA P-256 public key in PEM ({e})"),
                    })?;
                Ok(Key {
                    name: path
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                    key,
                })
            })
            .collect::<Result<_, TrustError>>()?;
        Ok(Keys(keys))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key that made `signature` (base64 of an ASN.1 ECDSA signature,
    /// as cosign writes it) over `bytes`, if one of ours did.
    pub fn signer_of(&self, bytes: &[u8], signature: &str) -> Option<&Key> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .ok()?;
        let sig = Signature::from_der(&der).ok()?;
        self.0.iter().find(|k| k.key.verify(bytes, &sig).is_ok())
    }
}

/// A private key that signs releases.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
}

impl Signer {
    /// A PKCS#8 PEM private key (`harness keygen`, or `openssl genpkey
    /// -algorithm EC -pkeyopt ec_paramgen_curve:P-256`).
    pub fn load(path: &Path) -> Result<Signer, TrustError> {
        let text = read_small(path, 64 << 10).map_err(|source| TrustError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let key = SigningKey::from_pkcs8_pem(&text).map_err(|e| TrustError::Key {
            path: path.to_path_buf(),
            why: format!("not an ECDSA P-256 private key in PKCS#8 PEM ({e})"),
        })?;
        Ok(Signer { key })
    }

    /// base64 of the ASN.1 signature over `bytes` (SHA-256), as `cosign sign-blob` writes it.
    pub fn sign(&self, bytes: &[u8]) -> String {
        let sig: Signature = self.key.sign(bytes);
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    }
}

/// Writes a new key pair: `PREFIX.key` (private, mode 0600, never
/// overwritten) and `PREFIX.pub`.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf), TrustError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = SigningKey::random(&mut rand_core::OsRng);
    let private = prefix.with_extension("key");
    let public = prefix.with_extension("pub");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrustError::Io { path, source }
    };
    let pem = key.to_pkcs8_pem(LineEnding::LF).expect("pkcs8");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .and_then(|mut f| f.write_all(pem.as_bytes()))
        .map_err(io(&private))?;
    let pub_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("spki");
    std::fs::write(&public, pub_pem).map_err(io(&public))?;
    Ok((private, public))
}

/// What vouches for a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vouch {
    /// The caller pinned this digest.
    Pinned(Digest),
    /// A key the checkout trusts signed it.
    Signed { key: String },
}

impl fmt::Display for Vouch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Vouch::Pinned(d) => write!(f, "pinned sha256:{}", &d.hex()[..12]),
            Vouch::Signed { key } => write!(f, "signed by {key}"),
        }
    }
}

/// A release whose root document was vouched for: a directory's SHA256SUMS
/// or a registry's multi-platform index, as the bytes that were checked.
#[derive(Debug, Clone)]
pub struct Vouched {
    pub digest: Digest,
    pub by: Vouch,
    pub content: Vec<u8>,
}

impl Vouched {
    /// The release version the vouched-for bytes name: the index's
    /// `org.opencontainers.image.version`, or the tag of the index file a
    /// directory's SHA256SUMS lists.
    pub fn version(&self) -> Option<String> {
        index_version(&self.content).or_else(|| {
            String::from_utf8_lossy(&self.content)
                .lines()
                .filter_map(|l| l.split_once("  "))
                .find_map(|(_, n)| crate::names::tag_of_index_file(n).map(str::to_string))
        })
    }
}

/// Checks what vouches for `source`: its pin, else a signature by one of `keys`.
pub fn verify(source: &Source, keys: &Keys) -> Result<Vouched, TrustError> {
    match source {
        Source::Dir { path, pin } => verify_dir(source, path, pin.as_ref(), keys),
        Source::Registry { reference, pin } => {
            verify_registry(source, reference, pin.as_ref(), keys)
        }
    }
}

fn verify_dir(
    source: &Source,
    dir: &Path,
    pin: Option<&Digest>,
    keys: &Keys,
) -> Result<Vouched, TrustError> {
    let path = dir.join(SUMS);
    let content = read_small(&path, 1 << 20)
        .map_err(|source| TrustError::Io { path, source })?
        .into_bytes();
    let digest = Digest::of(&content);
    let name = source.to_string();
    if let Some(pin) = pin {
        if *pin != digest {
            return Err(TrustError::Tampered {
                source_: name,
                why: format!("its {SUMS} is {digest}, the pin is {pin}"),
            });
        }
        return Ok(Vouched {
            digest,
            by: Vouch::Pinned(pin.clone()),
            content,
        });
    }
    let sig_path = dir.join(SUMS_SIG);
    let signature = match read_small(&sig_path, 4 << 10) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TrustError::Unverified {
                source_: name,
                why: format!("it has no {SUMS_SIG} and no digest was pinned"),
            })
        }
        Err(source) => {
            return Err(TrustError::Io {
                path: sig_path,
                source,
            })
        }
    };
    match keys.signer_of(&content, &signature) {
        Some(key) => Ok(Vouched {
            digest,
            by: Vouch::Signed {
                key: key.name.clone(),
            },
            content,
        }),
        None => Err(TrustError::Unverified {
            source_: name,
            why: format!(
                "{SUMS_SIG} is not a signature of its {SUMS} by a key this checkout trusts ({}): signed by another key, or changed since",
                trusted(keys)
            ),
        }),
    }
}

fn trusted(keys: &Keys) -> String {
    if keys.is_empty() {
        "none: trust/ has no .pub and no --trust-key was given".into()
    } else {
        keys.0
            .iter()
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn verify_registry(
    source: &Source,
    reference: &Reference,
    pin: Option<&Digest>,
    keys: &Keys,
) -> Result<Vouched, TrustError> {
    let client = Client::new(reference);
    let name = source.to_string();
    let asked = match (pin, &reference.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".into(),
    };
    let (content, digest) = client
        .manifest(&asked)?
        .ok_or_else(|| TrustError::Unverified {
            source_: name.clone(),
            why: format!("the registry has no {asked}"),
        })?;
    if let Some(pin) = pin {
        return Ok(Vouched {
            digest,
            by: Vouch::Pinned(pin.clone()),
            content,
        });
    }
    let tag = signature_tag(&digest);
    let Some((sig_manifest, _)) = client.manifest(&tag)? else {
        return Err(TrustError::Unverified {
            source_: name,
            why: format!(
                "no digest was pinned and it carries no signature ({}:{tag})",
                reference.repository()
            ),
        });
    };
    let manifest: oci_spec::image::ImageManifest =
        serde_json::from_slice(&sig_manifest).map_err(|e| TrustError::Tampered {
            source_: name.clone(),
            why: format!("its signature manifest does not parse: {e}"),
        })?;
    for layer in manifest.layers() {
        let (Some(annotations), true) = (
            layer.annotations(),
            layer.media_type().to_string() == SIMPLE_SIGNING,
        ) else {
            continue;
        };
        let Some(signature) = annotations.get(SIGNATURE_ANNOTATION) else {
            continue;
        };
        let Ok(layer_digest) = Digest::parse(layer.digest().as_ref()) else {
            continue;
        };
        let payload = client.blob(&layer_digest, 64 << 10)?;
        if let Some(key) = keys.signer_of(&payload, signature) {
            check_payload(&payload, reference, &digest).map_err(|why| TrustError::Tampered {
                source_: name.clone(),
                why: format!("{} signed {why}", key.name),
            })?;
            let version = check_version(reference.tag.as_deref(), &content, Some(&payload))
                .map_err(|why| TrustError::Tampered {
                    source_: name.clone(),
                    why,
                })?;
            if matches!(reference.tag.as_deref(), None | Some("latest")) {
                if let Some(v) = &version {
                    tracing::info!("{name}: latest is {v}");
                }
            }
            return Ok(Vouched {
                digest,
                by: Vouch::Signed {
                    key: key.name.clone(),
                },
                content,
            });
        }
    }
    Err(TrustError::Unverified {
        source_: name,
        why: format!(
            "none of its signatures is by a key this checkout trusts ({})",
            trusted(keys)
        ),
    })
}

pub use crate::paths::regular;

/// A small regular file's text, read no further than `max` bytes.
pub fn read_small(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    regular(path, max)?.take(max).read_to_string(&mut text)?;
    Ok(text)
}

/// The sigstore attachment's layer type and the annotation holding the signature.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub(super) const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The tag cosign keeps an image's signatures under: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// The optional claim of a signature that names the release's version.
pub const VERSION_CLAIM: &str = "io.guix-matrix.version";

/// The release version an index names (its `org.opencontainers.image.version`).
pub fn index_version(index: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(index).ok()?;
    v["annotations"][crate::names::VERSION]
        .as_str()
        .map(str::to_string)
}

/// No rollback: the version a vouched-for index names (and its signature
/// claims, when it does) must be the tag asked for, unless that tag is
/// `latest` (or none), which resolves to it. Returns the version.
pub fn check_version(
    asked: Option<&str>,
    index: &[u8],
    payload: Option<&[u8]>,
) -> Result<Option<String>, String> {
    let version = index_version(index);
    let claimed = payload
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
        .and_then(|p| p["optional"][VERSION_CLAIM].as_str().map(str::to_string));
    if let (Some(claimed), Some(version)) = (&claimed, &version) {
        if claimed != version {
            return Err(format!(
                "its signature names version {claimed}, its index {version}"
            ));
        }
    }
    let named = claimed.or(version);
    match (asked, &named) {
        (None | Some("latest"), _) => Ok(named),
        (Some(tag), Some(v)) if v == tag => Ok(named),
        (Some(tag), Some(v)) => Err(format!(
            "the registry serves version {v} under the tag {tag}: a rollback"
        )),
        (Some(tag), None) => Err(format!(
            "its index names no version, so it cannot be the release {tag}"
        )),
    }
}

/// A signed payload must name this image of this repository.
pub(crate) fn check_payload(
    payload: &[u8],
    reference: &Reference,
    digest: &Digest,
) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| format!("a payload that does not parse ({e})"))?;
    let critical = &v["critical"];
    if critical["type"] != SIGNATURE_TYPE {
        return Err(format!("a payload of type {}", critical["type"]));
    }
    let signed = critical["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or("(none)");
    if signed != digest.to_string() {
        return Err(format!("another image ({signed}), not {digest}"));
    }
    let identity = critical["identity"]["docker-reference"]
        .as_str()
        .unwrap_or("");
    let same_repo = Reference::parse(identity.split('@').next().unwrap_or(identity))
        .is_ok_and(|r| r.repository() == reference.repository());
    if !same_repo {
        return Err(format!(
            "it for another repository ({identity}), not {}",
            reference.repository()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_its_key_and_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = keygen(&dir.path().join("ours")).unwrap();
        let (_, other) = keygen(&dir.path().join("theirs")).unwrap();
        let signer = Signer::load(&private).unwrap();
        let sig = signer.sign(b"abc  file\n");
        let ours = Keys::load(Path::new("/nonexistent"), &[public]).unwrap();
        let theirs = Keys::load(Path::new("/nonexistent"), &[other]).unwrap();
        assert_eq!(
            ours.signer_of(b"abc  file\n", &sig).unwrap().name,
            "ours.pub"
        );
        assert!(ours.signer_of(b"abd  file\n", &sig).is_none());
        assert!(theirs.signer_of(b"abc  file\n", &sig).is_none());
        assert!(ours.signer_of(b"abc  file\n", "not base64!").is_none());
        // The private key is the owner's alone, and never overwritten.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(keygen(&dir.path().join("ours")).is_err());
    }
}
