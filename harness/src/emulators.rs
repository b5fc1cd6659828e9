//! binfmt_misc + qemu-user: the helper image and the handlers the matrix needs.

use crate::engine::run::{self, Privilege, RunSpec};
use crate::engine::Engine;
use crate::placement::Placement;
use std::time::Duration;

/// One binfmt_misc handler as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Handler {
    pub name: String,
    /// registered | missing | disabled | wrong
    pub state: String,
    pub interpreter: String,
    pub flags: String,
    pub qemu: String,
}

/// A platform's emulation status, for the status view and reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub platform: String,
    /// native | registered | missing | disabled | wrong
    pub state: String,
    pub handler: Option<Handler>,
}

impl Handler {
    /// What the emulator looks like, for reports: `qemu-arm: qemu-arm version 10.1.0 (flags OPF, /usr/bin/qemu-arm)`.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}: {} (flags {}, {})",
            self.name, self.qemu, self.flags, self.interpreter
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error(transparent)]
    Run(#[from] run::RunError),
    #[error(
        "cannot mount binfmt_misc on this host ({0}); mmdebstrap needs it to build foreign bases"
    )]
    HostMount(String),
    #[error("engine {engine} ({arch}) cannot run {platforms}: not its architecture, and its qemu-user-static has no handler {name}")]
    NoHandler {
        engine: String,
        arch: String,
        platforms: String,
        name: String,
    },
    #[error("emulator helper exited {code}:\n{output}")]
    Helper { code: i64, output: String },
    #[error("{platform}: emulator {name} is {state} (interpreter {interpreter}, flags {flags})")]
    Wrong {
        platform: String,
        name: String,
        state: String,
        interpreter: String,
        flags: String,
    },
}

impl EmulatorError {
    /// What to do about it.
    pub fn fix(&self) -> Option<String> {
        match self {
            EmulatorError::Run(e) => e.fix(),
            EmulatorError::HostMount(_) => Some("as root on the engine's host, `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc`, then run again".into()),
            EmulatorError::NoHandler { name, platforms, .. } => Some(format!("run {platforms} on another engine (--engine {platforms}=URL), or register {name} on this engine's host by hand (its qemu binary with the F flag)")),
            EmulatorError::Helper { .. } => None,
            EmulatorError::Wrong { name, .. } => Some(format!("as root on the host, `echo -1 > /proc/sys/fs/binfmt_misc/{name}`, then run again so the harness registers qemu-user-static's handler with the F flag")),
        }
    }
}

/// Runs the helper with `action` (status, register, unregister) for `names`.
pub async fn helper_run(
    engine: &Engine,
    helper: &str,
    action: &str,
    names: &[String],
) -> Result<Vec<Handler>, EmulatorError> {
    if names.is_empty() {
        return Ok(vec![]);
    }
    let mut cmd = vec![action.to_string()];
    cmd.extend(names.iter().cloned());
    let spec = RunSpec::new(helper, format!("binfmt {action}"))
        .cmd(cmd)
        .privilege(Privilege::Binfmt)
        .timeout(Duration::from_secs(120));
    let out = run::run(engine, &spec).await?;
    if out.exit_code != 0 && out.exit_code != 3 {
        return Err(EmulatorError::Helper {
            code: out.exit_code,
            output: out.combined,
        });
    }
    Ok(parse_status(&out.stdout))
}

/// Parses binfmt.sh's tab-separated lines.
pub fn parse_status(text: &str) -> Vec<Handler> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            (f.len() == 5).then(|| Handler {
                name: f[0].into(),
                state: f[1].into(),
                interpreter: f[2].into(),
                flags: f[3].into(),
                qemu: f[4].into(),
            })
        })
        .collect()
}

/// The emulators the placements need, each once.
pub fn needed(placements: &[Placement]) -> Vec<String> {
    let mut names: Vec<String> = placements
        .iter()
        .filter_map(|p| p.handler().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Per-platform status from the handlers.
pub fn statuses(placements: &[Placement], handlers: &[Handler]) -> Vec<Status> {
    placements
        .iter()
        .map(|p| {
            let Some(name) = p.handler() else {
                return Status {
                    platform: p.platform.clone(),
                    state: "native".into(),
                    handler: None,
                };
            };
            let h = handlers.iter().find(|h| h.name == name).cloned();
            Status {
                platform: p.platform.clone(),
                state: h.as_ref().map_or("missing".into(), |h| h.state.clone()),
                handler: h,
            }
        })
        .collect()
}

/// mmdebstrap (through arch-test) runs foreign maintainer scripts only when it
/// sees binfmt_misc in the host's mounts; the handlers themselves are
/// registered from the helper container. Mounts it when this process can
/// (root, local engine) and says how otherwise.
pub fn keep_host_mount() -> Result<(), EmulatorError> {
    if crate::host::binfmt_mounted() {
        return Ok(());
    }
    let dir = std::path::Path::new(crate::host::BINFMT_MISC);
    let out = std::process::Command::new("mount")
        .args(["-t", "binfmt_misc", "binfmt_misc"])
        .arg(dir)
        .output()
        .map_err(|e| EmulatorError::HostMount(e.to_string()))?;
    if !out.status.success() {
        return Err(EmulatorError::HostMount(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    tracing::info!("mounted binfmt_misc on the host (mmdebstrap looks for it there)");
    Ok(())
}

/// Registers what the platforms need; errors name the platform whose handler is wrong.
pub async fn register(
    engine: &Engine,
    helper: &str,
    placements: &[Placement],
) -> Result<Vec<Status>, EmulatorError> {
    let names = needed(placements);
    if names.is_empty() {
        return Ok(statuses(placements, &[]));
    }
    keep_host_mount()?;
    match helper_run(engine, helper, "register", &names).await {
        Err(EmulatorError::Helper { code: 2, output }) if output.contains("no handler named") => {
            let name = names
                .iter()
                .find(|n| output.contains(&format!("no handler named {n} ")))
                .cloned()
                .unwrap_or_default();
            let platforms: Vec<&str> = placements
                .iter()
                .filter(|p| p.handler() == Some(name.as_str()))
                .map(|p| p.platform.as_str())
                .collect();
            return Err(EmulatorError::NoHandler {
                engine: engine.url.clone(),
                arch: placements
                    .first()
                    .map(|p| p.engine_arch.clone())
                    .unwrap_or_default(),
                platforms: platforms.join(", "),
                name,
            });
        }
        other => other?,
    };
    // Read back from a fresh container: what the kernel kept after the helper exited.
    let handlers = helper_run(engine, helper, "status", &names).await?;

    let statuses = statuses(placements, &handlers);
    for s in &statuses {
        if let Some(h) = &s.handler {
            if h.state != "registered" {
                return Err(EmulatorError::Wrong {
                    platform: s.platform.clone(),
                    name: h.name.clone(),
                    state: h.state.clone(),
                    interpreter: h.interpreter.clone(),
                    flags: h.flags.clone(),
                });
            }
        }
    }
    Ok(statuses)
}
