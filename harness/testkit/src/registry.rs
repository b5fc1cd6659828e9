//! A registry of the test's own (Debian's docker-registry) on 127.0.0.1.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A registry of the test's own on 127.0.0.1, stopped on drop.
pub struct LocalRegistry {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl LocalRegistry {
    /// Starts one on a free port and waits until it answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry; .ci/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("http://127.0.0.1:{port}/v2/"))
            .call()
            .is_err()
        {
            assert!(Instant::now() < deadline, "the registry did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        LocalRegistry {
            child,
            _dir: dir,
            port,
        }
    }

    /// `127.0.0.1:PORT/guix-matrix`.
    pub fn repo(&self) -> String {
        format!("127.0.0.1:{}/guix-matrix", self.port)
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
