//! A dockerd of a test's own: its own socket, data root, exec root and network namespace, so the main engine is untouched (engine faults, several engines).

use crate::block_on;
use harness::engine::Engine;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A dockerd of the test's own, stopped and its directories removed on drop.
pub struct SecondEngine {
    pub dir: PathBuf,
    child: Option<Child>,
    tmpfs: bool,
}

impl SecondEngine {
    /// Starts one named `name`, its data root on a tmpfs of `tmpfs_size` when given.
    pub fn start(name: &str, tmpfs_size: Option<&str>) -> SecondEngine {
        let dir = PathBuf::from(format!("/tmp/guix-matrix-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("root")).unwrap();
        if let Some(size) = tmpfs_size {
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.join("root"))
                .status()
                .unwrap();
            assert!(ok.success(), "mount a tmpfs data root");
        }
        let mut e = SecondEngine {
            dir,
            child: None,
            tmpfs: tmpfs_size.is_some(),
        };
        e.spawn();
        e
    }

    /// Its socket, as `--engine` takes it.
    pub fn url(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// Starts its dockerd and waits until it answers.
    pub fn spawn(&mut self) {
        let d = &self.dir;
        // Its own network namespace: `--bridge none` makes dockerd delete the
        // default bridge, which must not be the host's docker0.
        let child = Command::new("unshare")
            .args(["--net", "--", "dockerd"])
            .arg("--host")
            .arg(self.url())
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args(["--bridge", "none", "--iptables=false", "--ip-masq=false"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("dockerd.log")).unwrap())
            .spawn()
            .expect("dockerd is installed (.ci/run installs docker.io)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while block_on(Engine::connect_to(&self.url())).is_err() {
            assert!(
                Instant::now() < deadline,
                "private dockerd did not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Stops its dockerd (SIGTERM, then SIGKILL after a minute).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// What its dockerd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Copies an image from `main` (docker save | docker load, through the API).
    pub fn load_from(&self, main: &Engine, image: &str) {
        let engine = block_on(Engine::connect_to(&self.url())).unwrap();
        let limit = std::time::Duration::from_secs(600);
        block_on(engine.load("copy from the main engine", main.save(&[image]), limit)).unwrap();
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        self.stop();
        let root = self.dir.join("root");
        // dockerd unmounts its layers on a clean stop; a tmpfs root is ours to unmount.
        let _ = Command::new("umount")
            .arg("-R")
            .arg(&root)
            .stderr(Stdio::null())
            .status();
        if self.tmpfs {
            let _ = Command::new("umount")
                .arg(&root)
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
