//! `harness doctor`: what this machine is missing for a run, each problem with the command that fixes it.

use crate::engine::Engine;
use crate::host;
use crate::matrix::Matrix;
use std::path::Path;
use std::time::Duration;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    /// Works, with a caveat (e.g. offline: bases built locally).
    Note,
    /// A run will fail until fixed.
    Problem,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub level: Level,
    pub check: String,
    pub detail: String,
    /// The command that fixes it (problems and notes).
    pub fix: Option<String>,
}

fn finding(level: Level, check: &str, detail: impl Into<String>, fix: Option<&str>) -> Finding {
    Finding {
        level,
        check: check.into(),
        detail: detail.into(),
        fix: fix.map(str::to_string),
    }
}

fn reachable(url: &str) -> Result<u16, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(8)))
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .head(url)
        .call()
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// Runs every check; never fails itself.
pub async fn run(matrix: &Matrix, host: &str) -> Vec<Finding> {
    let (engine, root) = engine(host).await;
    let mut out = vec![engine];
    out.extend(binfmt(matrix));
    out.push(mmdebstrap());
    out.push(disk(&root));
    out.extend(network(matrix).await);
    out
}

/// The engine answers; also where it keeps its data.
async fn engine(host: &str) -> (Finding, String) {
    let mut root = "/var/lib/docker".to_string();
    let finding = match Engine::connect_to(host).await {
        Ok(e) => {
            let v = e.describe().await.ok();
            if let Some(dir) = v.as_ref().and_then(|v| v.root_dir.clone()) {
                root = dir;
            }
            finding(
                Level::Ok,
                "engine",
                format!(
                    "{} answers: Docker {} (API {})",
                    e.url,
                    v.as_ref().map(|v| v.version.as_str()).unwrap_or_default(),
                    v.as_ref()
                        .map(|v| v.api_version.as_str())
                        .unwrap_or_default()
                ),
                None,
            )
        }
        Err(err) => finding(
            Level::Problem,
            "engine",
            err.to_string().lines().next().unwrap_or_default(),
            Some(crate::engine::ENGINE_FIX),
        ),
    };
    (finding, root)
}

/// binfmt_misc is mounted, and every emulator the matrix needs is registered with F.
fn binfmt(matrix: &Matrix) -> Vec<Finding> {
    if !host::binfmt_mounted() {
        return vec![finding(
            Level::Problem,
            "binfmt_misc",
            "not mounted on this host (mmdebstrap needs it for foreign bases)",
            Some("mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"),
        )];
    }
    let mut out = vec![finding(Level::Ok, "binfmt_misc", "mounted", None)];
    // This host's own view (doctor reads its /proc): 32-bit modes assumed,
    // a run probes them (`harness emulators` shows the decision).
    let host = crate::placement::Machine {
        arch: crate::placement::local_arch().into(),
        runs_32bit: Some(true),
        handlers: vec![],
    };
    let placements: Vec<_> = matrix
        .platforms
        .iter()
        .map(|p| crate::placement::decide(p, &host))
        .collect();
    out.extend(
        crate::emulators::needed(&placements)
            .iter()
            .map(|name| emulator(name)),
    );
    out
}

fn emulator(name: &str) -> Finding {
    let entry = host::binfmt_entry(name);
    let flags = entry
        .lines()
        .find_map(|l| l.strip_prefix("flags: "))
        .unwrap_or("");
    let check = format!("emulator {name}");
    if entry.is_empty() {
        finding(
            Level::Problem,
            &check,
            "not registered",
            Some("cargo run -p harness -- emulators --install"),
        )
    } else if !entry.starts_with("enabled") || !flags.contains('F') {
        finding(
            Level::Problem,
            &check,
            format!(
                "registered but {} (flags {flags})",
                if entry.starts_with("enabled") {
                    "without F"
                } else {
                    "disabled"
                }
            ),
            Some(&format!(
                "echo -1 > /proc/sys/fs/binfmt_misc/{name} && cargo run -p harness -- emulators --install"
            )),
        )
    } else {
        finding(
            Level::Ok,
            &check,
            format!("registered, flags {flags}"),
            None,
        )
    }
}

fn mmdebstrap() -> Finding {
    match host::which("mmdebstrap") {
        Some(p) => finding(Level::Ok, "mmdebstrap", p.display().to_string(), None),
        None => finding(
            Level::Problem,
            "mmdebstrap",
            "not installed: bases cannot be built offline",
            Some("apt-get install -y mmdebstrap arch-test"),
        ),
    }
}

/// Room for a cold run under the engine's data root.
fn disk(root: &str) -> Finding {
    let free = host::free_bytes(Path::new(root)).or_else(|| host::free_bytes(Path::new("/")));
    let need = 20u64 << 30;
    match free {
        Some(f) if f >= need => finding(
            Level::Ok,
            "disk",
            format!("{} GiB free under {root}", f >> 30),
            None,
        ),
        Some(f) => finding(
            Level::Problem,
            "disk",
            format!(
                "{} GiB free under {root}; a cold run of six platforms needs about 20 GiB",
                f >> 30
            ),
            Some("cargo run -p harness -- clean && docker system prune"),
        ),
        None => finding(
            Level::Note,
            "disk",
            format!("cannot measure free space under {root}"),
            None,
        ),
    }
}

/// The Debian mirror (needed), a registry and Guix's infrastructure (not needed offline).
async fn network(matrix: &Matrix) -> Vec<Finding> {
    let mirror = format!(
        "{}/dists/{}/Release",
        matrix.defaults.mirror.trim_end_matches('/'),
        matrix.defaults.suite
    );
    let checks: [(&str, String, Level, &str); 3] = [
        ("debian mirror", mirror, Level::Problem, "check the network, or set [defaults] mirror in matrix.toml"),
        (
            "registry",
            "https://registry-1.docker.io/v2/".into(),
            Level::Note,
            "none needed: bases are built from the Debian mirror (--build-base skips the pull attempt)",
        ),
        (
            "guix infrastructure",
            "https://codeberg.org/guix/guix.git/info/refs?service=git-upload-pack".into(),
            Level::Note,
            "none needed here: the online legs report `skipped: offline` (the nightly workflow runs them)",
        ),
    ];
    let mut out = vec![];
    for (check, url, level_if_down, fix) in checks {
        let res = tokio::task::spawn_blocking({
            let url = url.clone();
            move || reachable(&url)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        out.push(match res {
            Ok(code) => finding(
                Level::Ok,
                check,
                format!("{url} answers (HTTP {code})"),
                None,
            ),
            Err(e) => finding(
                level_if_down,
                check,
                format!("{url} unreachable: {e}"),
                Some(fix),
            ),
        });
    }
    out
}

/// The findings as lines for a terminal.
pub fn render(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            let tag = match f.level {
                Level::Ok => "ok     ",
                Level::Note => "note   ",
                Level::Problem => "PROBLEM",
            };
            let mut line = format!("{tag} {:20} {}", f.check, f.detail);
            if let Some(fix) = &f.fix {
                line.push_str(&format!("\n        {:20} fix: {fix}", ""));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}
