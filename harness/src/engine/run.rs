//! Running one command in a container: least privilege, streamed output, exit code, removal.

use crate::engine::{timeout, Engine, EngineError};
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The privileges a step asks for: named capabilities, never privileged mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// Nothing beyond Docker's defaults.
    None,
    /// guix-daemon: new namespaces and mounts for chroot builds, and the
    /// loopback interface of the build's network namespace
    /// (`--cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined`).
    GuixDaemon,
    /// Mounting binfmt_misc and registering handlers
    /// (`--cap-add SYS_ADMIN --security-opt apparmor=unconfined`).
    Binfmt,
}

impl Privilege {
    fn host_config(self) -> (Option<Vec<String>>, Option<Vec<String>>) {
        match self {
            Privilege::None => (None, None),
            Privilege::GuixDaemon => (
                Some(vec!["SYS_ADMIN".into(), "NET_ADMIN".into()]),
                Some(vec![
                    "seccomp=unconfined".into(),
                    "apparmor=unconfined".into(),
                ]),
            ),
            Privilege::Binfmt => (
                Some(vec!["SYS_ADMIN".into()]),
                Some(vec!["apparmor=unconfined".into()]),
            ),
        }
    }

    /// The same privileges as `docker run` flags, for commands we print.
    pub fn docker_flags(self) -> &'static str {
        match self {
            Privilege::None => "",
            Privilege::GuixDaemon => {
                "--cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined"
            }
            Privilege::Binfmt => "--cap-add SYS_ADMIN --security-opt apparmor=unconfined",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub image: String,
    pub platform: Option<String>,
    /// Arguments after the image's entry point (or after `entrypoint`).
    pub cmd: Vec<String>,
    /// Replaces the image's entry point when set.
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<String>,
    /// tmpfs mounts: path -> options (e.g. "rw,exec,size=512m").
    pub tmpfs: HashMap<String, String>,
    pub privilege: Privilege,
    /// No network: the offline checks must not wait on DNS.
    pub network_none: bool,
    pub working_dir: Option<String>,
    /// Files to put in the container before it starts: (tar bytes, target dir).
    pub uploads: Vec<(Vec<u8>, String)>,
    /// Bytes the program reads on its standard input, which then closes.
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Keep the container after it ran, for inspection (`repro`); it stays labelled.
    pub keep: bool,
    /// Print output lines as they come, prefixed with this tag.
    pub echo: Option<String>,
    /// Step name used in messages.
    pub step: String,
}

impl RunSpec {
    pub fn new(image: impl Into<String>, step: impl Into<String>) -> Self {
        RunSpec {
            image: image.into(),
            platform: None,
            cmd: vec![],
            entrypoint: None,
            env: vec![],
            tmpfs: HashMap::new(),
            privilege: Privilege::GuixDaemon,
            network_none: true,
            working_dir: None,
            uploads: vec![],
            stdin: None,
            timeout: Duration::from_secs(600),
            keep: false,
            echo: None,
            step: step.into(),
        }
    }

    pub fn cmd<S: Into<String>>(mut self, cmd: impl IntoIterator<Item = S>) -> Self {
        self.cmd = cmd.into_iter().map(Into::into).collect();
        self
    }

    /// `program` instead of the image's entry point (`cmd` its arguments).
    pub fn entrypoint<S: Into<String>>(mut self, program: impl IntoIterator<Item = S>) -> Self {
        self.entrypoint = Some(program.into_iter().map(Into::into).collect());
        self
    }

    /// `bash -c SCRIPT` instead of the entry point (the script may call /entry-point.sh).
    pub fn bash(mut self, script: impl Into<String>) -> Self {
        self.entrypoint = Some(vec!["bash".into(), "-c".into()]);
        self.cmd = vec![script.into()];
        self
    }

    pub fn platform(mut self, platform: &str) -> Self {
        self.platform = Some(platform.to_string());
        self
    }

    pub fn env(mut self, kv: impl Into<String>) -> Self {
        self.env.push(kv.into());
        self
    }

    pub fn tmpfs(mut self, path: &str, options: &str) -> Self {
        self.tmpfs.insert(path.into(), options.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    pub fn privilege(mut self, p: Privilege) -> Self {
        self.privilege = p;
        self
    }

    /// Echo output with `tag`, and keep the container after it ran.
    pub fn with_options(mut self, echo: Option<String>, keep: bool) -> Self {
        self.echo = echo;
        self.keep = keep;
        self
    }

    /// Feed `bytes` to the program's standard input (then close it).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn upload(mut self, tar: Vec<u8>, dir: &str) -> Self {
        self.uploads.push((tar, dir.into()));
        self
    }

    /// The equivalent `docker` CLI arguments (`run --rm -it … IMAGE CMD…`, `-i`
    /// without a terminal), labelled like ours.
    pub fn docker_args(&self) -> Vec<String> {
        use std::io::IsTerminal;
        let tty = if std::io::stdin().is_terminal() {
            "-it"
        } else {
            "-i"
        };
        let mut args: Vec<String> = vec!["run".into(), "--rm".into(), tty.into()];
        args.extend([
            "--label".into(),
            format!("{}=true", crate::names::LABEL_MANAGED),
        ]);
        if let Some(p) = &self.platform {
            args.extend(["--platform".into(), p.clone()]);
        }
        args.extend(
            self.privilege
                .docker_flags()
                .split_whitespace()
                .map(str::to_string),
        );
        if self.network_none {
            args.extend(["--network".into(), "none".into()]);
        }
        let mut tmpfs: Vec<_> = self.tmpfs.iter().collect();
        tmpfs.sort();
        for (path, opts) in tmpfs {
            args.extend(["--tmpfs".into(), format!("{path}:{opts}")]);
        }
        for e in &self.env {
            args.extend(["-e".into(), e.clone()]);
        }
        if let Some(ep) = &self.entrypoint {
            args.extend(["--entrypoint".into(), ep[0].clone()]);
        }
        args.push(self.image.clone());
        if let Some(ep) = &self.entrypoint {
            args.extend(ep[1..].iter().cloned());
        }
        args.extend(self.cmd.iter().cloned());
        args
    }
}

/// What a finished command left.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub exit_code: i64,
    /// stdout alone.
    pub stdout: String,
    /// stderr alone (the entry point's trace goes here).
    pub stderr: String,
    /// Both, interleaved as they came.
    pub combined: String,
    pub elapsed: Duration,
    /// Set when the container was kept for inspection.
    pub kept_container: Option<String>,
}

impl RunOutput {
    /// The last `n` lines of the combined output.
    pub fn tail(&self, n: usize) -> String {
        crate::text::tail_lines(&self.combined, n)
    }
}

/// A run that did not produce an exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{step}: timed out after {secs}s; last output:\n{tail}")]
    Timeout {
        step: String,
        secs: u64,
        tail: String,
    },
    #[error("{step}: the image {image} is no longer in the engine: something removed it while this run used it (`harness clean --force`, `docker rmi` or a prune on this engine)")]
    ImageGone { step: String, image: String },
    #[error("{platform}: the kernel cannot run this platform's programs ({detail}): no binfmt_misc handler is registered for it")]
    NoEmulator { platform: String, detail: String },
    #[error("{platform}: the emulator was not found when the container started ({detail}): its binfmt_misc handler is most likely registered without the F flag, so the kernel looks for the interpreter inside the container")]
    EmulatorNotVisible { platform: String, detail: String },
}

impl RunError {
    /// What to do about it.
    pub fn fix(&self) -> Option<String> {
        match self {
            RunError::Engine(e) => e.fix(),
            RunError::Timeout { .. } => None,
            RunError::ImageGone { .. } => Some("run the leg again (`harness repro --platform P`, or the same `harness run`): it builds or loads the image anew; a plain `harness clean` leaves the images of live runs alone".into()),
            RunError::NoEmulator { .. } => Some("cargo run -p harness -- emulators --install   (then `harness doctor` shows the status)".into()),
            RunError::EmulatorNotVisible { .. } => Some("as root, `echo -1 > /proc/sys/fs/binfmt_misc/<handler>` for this platform's emulator (matrix.toml `emulator`), then `cargo run -p harness -- emulators --install`".into()),
        }
    }
}

/// Recognises the kernel's and runc's words for "cannot execute this
/// architecture" in a start error or a container's output.
fn diagnose_exec(platform: Option<&str>, text: &str) -> Option<RunError> {
    let platform = platform?.to_string();
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .map(|l| l.trim().to_string())
    };
    if let Some(detail) = line("exec format error") {
        return Some(RunError::NoEmulator { platform, detail });
    }
    let missing = text.lines().find(|l| {
        (l.contains("exec user process caused") || l.starts_with("exec "))
            && l.contains("no such file or directory")
    });
    missing.map(|l| RunError::EmulatorNotVisible {
        platform,
        detail: l.trim().to_string(),
    })
}

/// Runs `spec` to completion and removes the container (unless kept).
pub async fn run(engine: &Engine, spec: &RunSpec) -> Result<RunOutput, RunError> {
    let docker = &engine.docker;
    let (cap_add, security_opt) = spec.privilege.host_config();
    let host_config = HostConfig {
        cap_add,
        security_opt,
        network_mode: spec.network_none.then(|| "none".to_string()),
        tmpfs: (!spec.tmpfs.is_empty()).then(|| spec.tmpfs.clone()),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(spec.cmd.clone()),
        entrypoint: spec.entrypoint.clone(),
        env: Some(spec.env.clone()),
        working_dir: spec.working_dir.clone(),
        labels: Some(Engine::container_labels(spec.platform.as_deref())),
        host_config: Some(host_config),
        open_stdin: spec.stdin.is_some().then_some(true),
        attach_stdin: spec.stdin.is_some().then_some(true),
        stdin_once: spec.stdin.is_some().then_some(true),
        ..Default::default()
    };
    let mut opts = CreateContainerOptionsBuilder::default();
    if let Some(p) = &spec.platform {
        opts = opts.platform(p);
    }
    let created = timeout(
        &format!("{}: create container", spec.step),
        Duration::from_secs(60),
        docker.create_container(Some(opts.build()), body),
    )
    .await?
    .map_err(|e| match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        } => RunError::ImageGone {
            step: spec.step.clone(),
            image: spec.image.clone(),
        },
        e => EngineError::api(format!(
            "{}: create container from {}",
            spec.step, spec.image
        ))(e)
        .into(),
    })?;
    let id = created.id;
    engine.track(&id, spec.platform.as_deref());

    let result = drive(engine, &id, spec).await;
    let keep = spec.keep && result.is_ok();
    if keep {
        engine.untrack(&id);
        return result.map(|mut out| {
            out.kept_container = Some(id.clone());
            out
        });
    }
    engine.remove_container(&id).await;
    result
}

async fn drive(engine: &Engine, id: &str, spec: &RunSpec) -> Result<RunOutput, RunError> {
    let docker = &engine.docker;
    for (tar, dir) in &spec.uploads {
        let opts = UploadToContainerOptionsBuilder::default().path(dir).build();
        timeout(
            &format!("{}: upload to {dir}", spec.step),
            Duration::from_secs(60),
            docker.upload_to_container(id, Some(opts), bollard::body_full(tar.clone().into())),
        )
        .await?
        .map_err(EngineError::api(format!(
            "{}: upload files to {dir}",
            spec.step
        )))?;
    }
    let feed = match &spec.stdin {
        Some(bytes) => Some(attach_stdin(engine, id, spec, bytes.clone()).await?),
        None => None,
    };
    let started = Instant::now();
    if let Err(e) = docker
        .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
        .await
    {
        return Err(
            diagnose_exec(spec.platform.as_deref(), &e.to_string()).unwrap_or_else(|| {
                EngineError::api(format!("{}: start container", spec.step))(e).into()
            }),
        );
    }

    if let Some(feed) = feed {
        feed.await.ok();
    }
    let mut out = RunOutput {
        exit_code: -1,
        stdout: String::new(),
        stderr: String::new(),
        combined: String::new(),
        elapsed: Duration::ZERO,
        kept_container: None,
    };
    let logs_opts = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = docker.logs(id, Some(logs_opts));
    let collect = async {
        while let Some(item) = logs.next().await {
            match item {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    let text = String::from_utf8_lossy(&message);
                    echo(spec, &text);
                    out.stdout.push_str(&text);
                    out.combined.push_str(&text);
                }
                Ok(LogOutput::StdErr { message }) => {
                    let text = String::from_utf8_lossy(&message);
                    echo(spec, &text);
                    out.stderr.push_str(&text);
                    out.combined.push_str(&text);
                }
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => return Err(EngineError::api(format!("{}: read output", spec.step))(e)),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(spec.timeout, collect).await {
        Ok(res) => res?,
        Err(_) => {
            return Err(RunError::Timeout {
                step: spec.step.clone(),
                secs: spec.timeout.as_secs(),
                tail: out.tail(20),
            })
        }
    }
    out.exit_code = exit_code(engine, id, &spec.step).await?;
    out.elapsed = started.elapsed();
    if out.exit_code != 0 && out.combined.lines().count() <= 3 {
        // A container that died before its program printed anything else.
        if let Some(e) = diagnose_exec(spec.platform.as_deref(), &out.combined) {
            return Err(e);
        }
    }
    Ok(out)
}

/// Attaches to the (not yet started) container's stdin; the returned task
/// writes `bytes` once it runs and then detaches, which closes the stdin
/// (`stdin_once`).
async fn attach_stdin(
    engine: &Engine,
    id: &str,
    spec: &RunSpec,
    bytes: Vec<u8>,
) -> Result<tokio::task::JoinHandle<()>, EngineError> {
    use tokio::io::AsyncWriteExt;
    let opts = bollard::query_parameters::AttachContainerOptionsBuilder::default()
        .stdin(true)
        .stream(true)
        .build();
    let step = format!("{}: attach stdin", spec.step);
    let attached = timeout(
        &step,
        Duration::from_secs(60),
        engine.docker.attach_container(id, Some(opts)),
    )
    .await?
    .map_err(EngineError::api(step))?;
    let mut input = attached.input;
    Ok(tokio::spawn(async move {
        let _ = input.write_all(&bytes).await;
        let _ = input.flush().await;
        let _ = input.shutdown().await;
        drop(attached.output);
    }))
}

/// The exit code of a stopped container. A non-zero code arrives from
/// `wait_container` as an error; read it from there.
async fn exit_code(engine: &Engine, id: &str, step: &str) -> Result<i64, EngineError> {
    let mut wait = engine
        .docker
        .wait_container(id, None::<bollard::query_parameters::WaitContainerOptions>);
    let res = timeout(
        &format!("{step}: wait for exit"),
        Duration::from_secs(60),
        wait.next(),
    )
    .await?;
    match res {
        Some(Ok(r)) => Ok(r.status_code),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(EngineError::api(format!("{step}: wait for exit"))(e)),
        None => Err(EngineError::Api {
            step: format!("{step}: wait for exit"),
            source: bollard::errors::Error::DockerStreamError {
                error: "the engine closed the wait stream without an exit code".into(),
            },
        }),
    }
}

fn echo(spec: &RunSpec, text: &str) {
    if let Some(tag) = &spec.echo {
        for line in text.lines() {
            eprintln!("{tag} {line}");
        }
    }
}

/// A tar archive of (path, mode, content) entries, for uploads.
pub fn tar_of(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, mode, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, path, *content)
            .expect("in-memory tar");
    }
    builder.into_inner().expect("in-memory tar")
}

/// The tar of `path` inside `image` (a container is created, read, removed).
pub async fn copy_out(engine: &Engine, image: &str, path: &str) -> Result<Vec<u8>, RunError> {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["true".into()]),
        labels: Some(Engine::container_labels(None)),
        ..Default::default()
    };
    let created = engine
        .docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .map_err(EngineError::api(format!("create a container from {image}")))?;
    engine.track(&created.id, None);
    let opts = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
        .path(path)
        .build();
    let mut stream = engine
        .docker
        .download_from_container(&created.id, Some(opts));
    let mut tar = Vec::new();
    let res = timeout(
        &format!("copy {path} out of {image}"),
        Duration::from_secs(120),
        async {
            while let Some(chunk) = stream.next().await {
                tar.extend_from_slice(
                    &chunk.map_err(EngineError::api(format!("copy {path} out of {image}")))?,
                );
            }
            Ok::<(), EngineError>(())
        },
    )
    .await;
    engine.remove_container(&created.id).await;
    res??;
    Ok(tar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_format_error_names_the_platform_and_the_fix() {
        let e = diagnose_exec(
            Some("linux/riscv64"),
            "standard_init_linux.go:228: exec user process caused: exec format error",
        )
        .unwrap();
        let msg = e.to_string();
        assert!(
            msg.starts_with("linux/riscv64: the kernel cannot run"),
            "{msg}"
        );
        let fix = e.fix().unwrap_or_default();
        assert!(
            fix.starts_with("cargo run -p harness -- emulators"),
            "{fix}"
        );
    }

    #[test]
    fn a_missing_interpreter_points_at_the_f_flag() {
        let e = diagnose_exec(
            Some("linux/arm/v7"),
            "standard_init_linux.go:228: exec user process caused: no such file or directory",
        )
        .unwrap();
        assert!(e.to_string().contains("without the F flag"), "{e}");
        assert!(diagnose_exec(None, "exec format error").is_none());
        assert!(diagnose_exec(Some("linux/amd64"), "all good").is_none());
    }
}
