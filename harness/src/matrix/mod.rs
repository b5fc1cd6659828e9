//! matrix.toml: the typed list of platforms and the defaults every step reads.

pub mod check;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A matrix.toml that cannot be used, with where and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error(
        "cannot read {path}: {source} (fix: run from the repository root or pass --matrix PATH)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}", invalid(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<check::Problem>,
    },
    #[error("{path}: {message}")]
    Empty { path: PathBuf, message: String },
    #[error("no platform in {path} matches `{wanted}` (known: {known})")]
    UnknownPlatform {
        path: PathBuf,
        wanted: String,
        known: String,
    },
}

/// Every problem, one line each, with its fix.
fn invalid(path: &Path, problems: &[check::Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| {
            let at = p.line.map(|l| format!(":{l}")).unwrap_or_default();
            let table = if p.table.starts_with('[') {
                p.table.clone()
            } else {
                format!("platform {}", p.table)
            };
            format!(
                "{}{at}: {table}: field `{}`: {} (fix: {})",
                path.display(),
                p.field,
                p.message,
                p.fix
            )
        })
        .collect();
    match lines.len() {
        1 => lines[0].clone(),
        n => format!(
            "{} has {n} problems:\n  {}",
            path.display(),
            lines.join("\n  ")
        ),
    }
}

/// Settings shared by every platform.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The image the Dockerfile starts FROM when it can be found or pulled.
    pub base_image: String,
    /// Debian suite of the offline base (mmdebstrap).
    pub suite: String,
    /// Debian mirror for the offline base.
    pub mirror: String,
    /// Repository name of the images the harness builds.
    pub image: String,
    /// The Guix version the image must report.
    pub guix_version: String,
    /// Timeout of one step on a native platform, before `slowdown`.
    pub step_timeout_secs: u64,
    /// Debian suite whose cross compilers build the readdir() probe. Its
    /// glibc must still fail non-LFS readdir() with EOVERFLOW (2.36 does;
    /// sid's 2.43 no longer does).
    pub probe_suite: String,
    /// The substitute servers the pull stage may use: the official build
    /// farms only, since what it pulls ships. Users' runs of the image keep
    /// substitutes/urls.
    #[serde(default = "official_substitutes")]
    pub pull_substitutes: Vec<String>,
    /// The keys (files in substitutes/) the pull stage trusts: the official
    /// build farms' only. Users' runs of the image trust every key there.
    #[serde(default = "official_keys")]
    pub pull_keys: Vec<String>,
    /// A Debian base older than this many days is rebuilt, not reused (nor
    /// taken from a release): Debian's security updates reach the image.
    #[serde(default = "default_max_base_age")]
    pub max_base_age_days: u64,
    /// apt may use a mirror whose Release file has expired (a frozen
    /// mirror a test needs): GUIX_MATRIX_ALLOW_EXPIRED_MIRROR, not the file.
    #[serde(skip)]
    pub expired_mirror_ok: bool,
}

fn official_substitutes() -> Vec<String> {
    vec![
        "https://ci.guix.gnu.org".into(),
        "https://bordeaux.guix.gnu.org".into(),
    ]
}

fn official_keys() -> Vec<String> {
    vec![
        "berlin.guix.gnu.org.pub".into(),
        "bordeaux.guix.gnu.org.pub".into(),
    ]
}

fn default_max_base_age() -> u64 {
    30
}

/// One row of the matrix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    pub docker: String,
    pub guix_system: String,
    pub debian_arch: String,
    pub uname_m: String,
    pub emulator: String,
    /// Engine architecture -> `uname -m` there, for engines that run it
    /// natively though it is not their own architecture.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub compat: BTreeMap<String, String>,
    pub cache_tmpfs: bool,
    #[serde(default)]
    pub probe_cc: Option<String>,
    pub slowdown: f64,
    /// The limit of the pull stage where the platform runs natively (under
    /// qemu it is multiplied by `slowdown`, like every step).
    #[serde(default = "default_pull_timeout")]
    pub pull_timeout_secs: u64,
}

fn default_pull_timeout() -> u64 {
    3600
}

/// A CI runner (GitHub Actions `runs-on` label) and the engine architecture it has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Runner {
    pub arch: String,
    pub label: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    defaults: Defaults,
    #[serde(rename = "runner", default)]
    runners: Vec<Runner>,
    #[serde(rename = "platform", default)]
    platforms: Vec<Platform>,
}

/// The loaded, validated matrix.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub path: PathBuf,
    pub defaults: Defaults,
    pub runners: Vec<Runner>,
    pub platforms: Vec<Platform>,
}

/// The OCI fields of a Docker platform string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OciPlatform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/arm/v7` -> os, architecture, variant.
    pub fn oci(&self) -> OciPlatform {
        let mut parts = self.docker.split('/');
        OciPlatform {
            os: parts.next().unwrap_or_default().to_string(),
            architecture: parts.next().unwrap_or_default().to_string(),
            variant: parts.next().map(str::to_string),
        }
    }

    /// The engine architecture (Docker's name) that runs it as its own.
    pub fn arch(&self) -> &str {
        self.docker.split('/').nth(1).unwrap_or_default()
    }

    /// Every name a user may type for it, from its row: the Docker platform
    /// as Docker normalises it (`linux/arm64` for `linux/arm64/v8`,
    /// `linux/arm` for `linux/arm/v7`), the bare architecture (`arm64`,
    /// `arm`), its slug, `uname -m`, the Debian architecture and the Guix
    /// system. A new row brings its own.
    pub fn names(&self) -> Vec<String> {
        let oci = self.oci();
        let mut names = vec![self.docker.clone(), self.slug(), oci.architecture.clone()];
        // Docker's defaults: arm64's variant is v8, arm's v7.
        let default_variant = match oci.architecture.as_str() {
            "arm64" => Some("v8"),
            "arm" => Some("v7"),
            _ => None,
        };
        if oci.variant.is_some() && oci.variant.as_deref() == default_variant {
            names.push(format!("{}/{}", oci.os, oci.architecture));
        }
        if let Some(v) = &oci.variant {
            names.push(format!("{}/{v}", oci.architecture));
            names.push(format!("{}{v}", oci.architecture));
        }
        names.extend([
            self.uname_m.clone(),
            self.debian_arch.clone(),
            self.guix_system.clone(),
        ]);
        // Each once, in the order above.
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        names
    }

    /// A name safe for tags, file names and test names: `arm-v7`.
    pub fn slug(&self) -> String {
        self.docker.trim_start_matches("linux/").replace('/', "-")
    }

    /// A build step's timeout on this platform wherever it runs: the native
    /// budget times `slowdown` (a native leg finishes well inside it; a leg's
    /// own budget follows where it runs, see `placement`).
    pub fn timeout(&self, native: Duration) -> Duration {
        native.mul_f64(self.slowdown.max(1.0))
    }
}

impl Matrix {
    /// The row an engine of architecture `arch` (`amd64`, `arm64`) runs natively.
    pub fn native(&self, arch: &str) -> Option<&Platform> {
        self.platforms.iter().find(|p| p.arch() == arch)
    }

    /// Reads and validates `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, MatrixError> {
        let path = path.as_ref().to_path_buf();
        let text = std::fs::read_to_string(&path).map_err(|source| MatrixError::Read {
            path: path.clone(),
            source,
        })?;
        let mut matrix = Self::parse(&path, &text)?;
        matrix.defaults.expired_mirror_ok = std::env::var("GUIX_MATRIX_ALLOW_EXPIRED_MIRROR")
            .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
        Ok(matrix)
    }

    /// Parses and validates matrix text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, MatrixError> {
        let file: File = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_column(text, s.start))
                .unwrap_or((1, 1));
            MatrixError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let matrix = Matrix {
            path: path.to_path_buf(),
            defaults: file.defaults,
            runners: file.runners,
            platforms: file.platforms,
        };
        matrix.validate(text)?;
        Ok(matrix)
    }

    fn validate(&self, text: &str) -> Result<(), MatrixError> {
        if self.platforms.is_empty() {
            return Err(MatrixError::Empty {
                path: self.path.clone(),
                message:
                    "no [[platform]] table (fix: add at least one, e.g. docker = \"linux/amd64\")"
                        .into(),
            });
        }
        let problems = check::problems(self, text);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(MatrixError::Invalid {
                path: self.path.clone(),
                problems,
            })
        }
    }

    /// The CI runner for `platform`'s legs: the one of its own architecture
    /// (native), else the first (emulated); none when no runner is listed.
    pub fn runner(&self, platform: &Platform) -> Option<&Runner> {
        self.runners
            .iter()
            .find(|r| r.arch == platform.arch())
            .or(self.runners.first())
    }

    /// The platforms named in `wanted` (Docker platform, slug or Guix system),
    /// or all of them when `wanted` is empty.
    pub fn select(&self, wanted: &[String]) -> Result<Vec<Platform>, MatrixError> {
        if wanted.is_empty() {
            return Ok(self.platforms.clone());
        }
        wanted.iter().map(|w| self.find(w).cloned()).collect()
    }

    /// The platform `wanted` names, as a user types it (see [`Platform::names`]).
    pub fn find(&self, wanted: &str) -> Result<&Platform, MatrixError> {
        let wanted_lc = wanted.to_ascii_lowercase();
        // The Docker platform and the slug first: a bare name two rows
        // share (a Debian architecture that is another's `uname -m`) goes
        // to the row that is that platform.
        let exact = self
            .platforms
            .iter()
            .find(|p| p.docker == wanted_lc || p.slug() == wanted_lc);
        exact
            .or_else(|| {
                self.platforms
                    .iter()
                    .find(|p| p.names().contains(&wanted_lc))
            })
            .ok_or_else(|| MatrixError::UnknownPlatform {
                path: self.path.clone(),
                wanted: wanted.to_string(),
                known: self
                    .platforms
                    .iter()
                    .map(|p| format!("{} ({})", p.docker, p.names()[1..].join(", ")))
                    .collect::<Vec<_>>()
                    .join("; "),
            })
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Matrix, MatrixError> {
        Matrix::parse(Path::new("matrix.toml"), text)
    }

    const DEFAULTS: &str = r#"
[defaults]
base_image = "debian:sid-slim"
suite = "sid"
mirror = "http://deb.debian.org/debian"
image = "guix-matrix"
guix_version = "1.5.0"
step_timeout_secs = 600
probe_suite = "bookworm"
"#;

    const ARM: &str = r#"
[[platform]]
docker = "linux/arm/v7"
guix_system = "armhf-linux"
debian_arch = "armhf"
uname_m = "armv7l"
emulator = "qemu-arm"
compat = { arm64 = "armv8l" }
cache_tmpfs = true
probe_cc = "arm-linux-gnueabihf-gcc"
slowdown = 6.0
"#;

    #[test]
    fn the_repository_matrix_loads_with_six_platforms() {
        let m = Matrix::load(crate::paths::Checkout::find().unwrap().matrix()).unwrap();
        let docker: Vec<_> = m.platforms.iter().map(|p| p.docker.as_str()).collect();
        assert_eq!(
            docker,
            [
                "linux/amd64",
                "linux/386",
                "linux/arm/v7",
                "linux/arm64/v8",
                "linux/ppc64le",
                "linux/riscv64"
            ]
        );
    }

    #[test]
    fn a_good_file_parses_and_platform_fields_split() {
        let m = parse(&format!("{DEFAULTS}{ARM}")).unwrap();
        let p = &m.platforms[0];
        assert_eq!(
            p.oci(),
            OciPlatform {
                os: "linux".into(),
                architecture: "arm".into(),
                variant: Some("v7".into())
            }
        );
        assert_eq!(p.slug(), "arm-v7");
        assert_eq!(p.arch(), "arm");
        assert_eq!(p.timeout(Duration::from_secs(10)), Duration::from_secs(60));
        for name in [
            "armhf-linux",
            "arm-v7",
            "linux/arm",
            "arm",
            "armhf",
            "armv7l",
            "LINUX/ARM/V7",
        ] {
            assert_eq!(m.find(name).unwrap().docker, "linux/arm/v7", "{name}");
        }
        let e = m.find("sparc").unwrap_err().to_string();
        assert!(
            e.contains(
                "linux/arm/v7 (arm-v7, arm, linux/arm, arm/v7, armv7, armv7l, armhf, armhf-linux)"
            ),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = parse(&format!("{DEFAULTS}\n[[platform]]\ndocker = linux/amd64\n")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("matrix.toml:12:"), "{msg}");
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let text = format!("{DEFAULTS}{}", ARM.replace("slowdown", "slow_down"));
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.contains("slow_down"), "{msg}");
        assert!(msg.starts_with("matrix.toml:20:"), "{msg}");
    }

    #[test]
    fn missing_field_is_named() {
        let text = format!("{DEFAULTS}{}", ARM.replace("uname_m = \"armv7l\"\n", ""));
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.contains("missing field `uname_m`"), "{msg}");
    }

    #[test]
    fn wrong_type_is_named() {
        let text = format!(
            "{DEFAULTS}{}",
            ARM.replace("cache_tmpfs = true", "cache_tmpfs = \"yes\"")
        );
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.contains("invalid type"), "{msg}");
        assert!(msg.starts_with("matrix.toml:18:"), "{msg}");
    }

    #[test]
    fn semantic_errors_name_platform_and_field() {
        let cases = [
            (ARM.replace("linux/arm/v7", "arm/v7"), "field `docker`"),
            (ARM.replace("armhf-linux", "armhf"), "field `guix_system`"),
            (ARM.replace("qemu-arm", "box64"), "field `emulator`"),
            (
                ARM.replace("arm64 = \"armv8l\"", "arm = \"armv8l\""),
                "field `compat`",
            ),
            (ARM.replace("6.0", "0.5"), "field `slowdown`"),
            (format!("{ARM}{ARM}"), "listed twice"),
        ];
        let at = regex::Regex::new(r"^matrix.toml:[0-9]+: platform (linux/)?arm/v7: ").unwrap();
        for (platforms, expected) in cases {
            let msg = parse(&format!("{DEFAULTS}{platforms}"))
                .unwrap_err()
                .to_string();
            assert!(msg.contains(expected), "{expected}: {msg}");
            assert!(at.is_match(&msg), "{msg}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_line_and_fix() {
        let text = format!(
            "{}{}",
            DEFAULTS
                .replace("step_timeout_secs = 600", "step_timeout_secs = 0")
                .replace("http://deb.debian.org/debian", "deb.debian.org")
                .replace("image = \"guix-matrix\"", "image = \"Guix:x\""),
            ARM.replace("slowdown = 6.0", "slowdown = 1e300")
                .replace("guix_system = \"armhf-linux\"", "guix_system = \"aarch64\"")
                .replace("uname_m = \"armv7l\"", "uname_m = \"armv7 l\"")
        );
        let err = parse(&text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("matrix.toml has 6 problems:"), "{msg}");
        for want in [
            "matrix.toml:5: [defaults]: field `mirror`",
            "matrix.toml:6: [defaults]: field `image`",
            "matrix.toml:8: [defaults]: field `step_timeout_secs`: 0 is out of range",
            "matrix.toml:13: platform linux/arm/v7: field `guix_system`: `aarch64` is not a Guix system such as \"armhf-linux\" (fix: the system `guix build --system` takes for it)",
            "matrix.toml:15: platform linux/arm/v7: field `uname_m`",
            "matrix.toml:20: platform linux/arm/v7: field `slowdown`: 1e300 is out of range",
        ] {
            assert!(msg.contains(want), "missing `{want}` in:\n{msg}");
        }
    }

    #[test]
    fn a_platform_is_one_row_of_data_checked_for_form_not_against_a_table() {
        // A new platform is a row of matrix.toml (smoke measures what it says).
        let s390x = ARM
            .replace("linux/arm/v7", "linux/s390x")
            .replace("armhf-linux", "s390x-linux")
            .replace("\"armhf\"", "\"s390x\"")
            .replace("armv7l", "s390x")
            .replace("qemu-arm", "qemu-s390x")
            .replace("arm-linux-gnueabihf-gcc", "s390x-linux-gnu-gcc");
        parse(&format!("{DEFAULTS}{s390x}")).unwrap_or_else(|e| panic!("{e}"));
        let text = format!("{DEFAULTS}{}", ARM.replace("linux/arm/v7", "linux/s390"));
        let msg = parse(&text).unwrap_err().to_string();
        assert!(
            msg.contains("`linux/s390` is not a Docker platform such as linux/arm/v7 (fix: docker = \"linux/ARCH[/VARIANT]\", ARCH one of amd64, 386"),
            "{msg}"
        );
    }

    #[test]
    fn every_platform_names_its_emulator_wherever_the_harness_runs() {
        let text = format!(
            "{DEFAULTS}{}",
            ARM.replace("emulator = \"qemu-arm\"", "emulator = \"none\"")
        );
        let msg = parse(&text).unwrap_err().to_string();
        assert!(
            msg.contains("field `emulator`: `none` is not a qemu-user handler such as \"qemu-arm\" (fix: the handler's name in Debian's qemu-user-static"),
            "{msg}"
        );
    }

    #[test]
    fn runners_are_checked_and_chosen_by_architecture() {
        let runners = "\n[[runner]]\narch = \"amd64\"\nlabel = \"ubuntu-24.04\"\n\n[[runner]]\narch = \"arm64\"\nlabel = \"ubuntu-24.04-arm\"\n";
        let m = parse(&format!("{DEFAULTS}{runners}{ARM}")).unwrap();
        // arm/v7 has no runner of its own architecture: the first, emulated.
        assert_eq!(m.runner(&m.platforms[0]).unwrap().label, "ubuntu-24.04");
        let mut arm64 = m.platforms[0].clone();
        arm64.docker = "linux/arm64/v8".into();
        assert_eq!(m.runner(&arm64).unwrap().label, "ubuntu-24.04-arm");
        let bad = runners
            .replace("arch = \"arm64\"", "arch = \"aarch64\"")
            .replace("\"ubuntu-24.04\"", "\"\"");
        let msg = parse(&format!("{DEFAULTS}{bad}{ARM}"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(
                "matrix.toml:13: [[runner]] amd64: field `label`: `` is not a runner label"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("[[runner]] aarch64: field `arch`: `aarch64` is not an engine architecture the harness knows (fix: use Docker's name"),
            "{msg}"
        );
    }

    #[test]
    fn no_platform_is_an_error_with_a_fix() {
        let msg = parse(DEFAULTS).unwrap_err().to_string();
        assert!(msg.contains("no [[platform]]"), "{msg}");
    }

    #[test]
    fn unknown_platform_lists_the_known_ones() {
        let m = parse(&format!("{DEFAULTS}{ARM}")).unwrap();
        let msg = m.select(&["linux/s390x".into()]).unwrap_err().to_string();
        assert!(
            msg.contains("linux/s390x") && msg.contains("known: linux/arm/v7"),
            "{msg}"
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let msg = Matrix::load("/nonexistent/matrix.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/nonexistent/matrix.toml"), "{msg}");
    }
}
