//! The engine itself failing, on a private dockerd (own socket, data root and
//! exec root, network namespace) so the main engine is untouched: the engine going away while
//! runs are in flight, and a data root that fills up during an image build.

use crate::common::{block_on, harness, prepared};
use harness::engine::{Engine, EngineError};
use harness::run::{self, RunError, RunSpec};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A dockerd of the test's own, stopped and its directories removed on drop.
struct PrivateEngine {
    dir: PathBuf,
    child: Option<Child>,
    tmpfs: bool,
}

impl PrivateEngine {
    fn start(name: &str, tmpfs_size: Option<&str>) -> PrivateEngine {
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
        let mut e = PrivateEngine {
            dir,
            child: None,
            tmpfs: tmpfs_size.is_some(),
        };
        e.spawn();
        e
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    fn spawn(&mut self) {
        let d = &self.dir;
        // Its own network namespace: `--bridge none` makes dockerd delete the
        // default bridge, which must not be the host's docker0.
        let child = Command::new("unshare")
            .args(["--net", "--", "dockerd"])
            .arg("--host")
            .arg(self.host())
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
        while block_on(Engine::connect_to(&self.host())).is_err() {
            assert!(
                Instant::now() < deadline,
                "private dockerd did not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn stop(&mut self) {
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Copies an image from the main engine (docker save | docker load, through the API).
    fn load_from_main(&self, image: &str) {
        use futures::StreamExt;
        let main = &harness().engine;
        let engine = block_on(Engine::connect_to(&self.host())).unwrap();
        let tar: Vec<u8> = block_on(async {
            let mut out = vec![];
            let mut s = main.docker.export_image(image);
            while let Some(chunk) = s.next().await {
                out.extend_from_slice(&chunk.unwrap());
            }
            out
        });
        block_on(async {
            let opts = bollard::query_parameters::ImportImageOptionsBuilder::default()
                .quiet(true)
                .build();
            let mut s = engine
                .docker
                .import_image(opts, bollard::body_full(tar.into()), None);
            while let Some(item) = s.next().await {
                item.unwrap();
            }
        });
    }
}

impl Drop for PrivateEngine {
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

fn tail(path: &Path) -> String {
    harness::text::tail_lines(&std::fs::read_to_string(path).unwrap_or_default(), 20)
}

#[test]
fn the_engine_going_away_mid_run_is_a_clear_error_and_the_next_run_works() {
    let _serial = crate::common::exclusive();
    let base = prepared("linux/amd64").base.reference;
    let bridge_before = Path::new("/sys/class/net/docker0").exists();
    let mut private = PrivateEngine::start("gone", None);
    private.load_from_main(&base);
    let engine = block_on(Engine::connect_to(&private.host())).unwrap();
    let spec = |name: &str| {
        RunSpec::new(base.clone(), name)
            .platform("linux/amd64")
            .cmd(["sleep", "300"])
            .privilege(run::Privilege::None)
    };
    let started = Instant::now();
    let (spec_a, spec_b) = (spec("leg A"), spec("leg B"));
    let results = block_on(async {
        let a = run::run(&engine, &spec_a);
        let b = run::run(&engine, &spec_b);
        let stop = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            private.stop();
        };
        let (a, b, ()) = tokio::join!(a, b, stop);
        vec![a, b]
    });
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "runs hung after the engine went away"
    );
    for r in results {
        let err = r.expect_err("a run cannot finish without its engine");
        let lost = matches!(err, RunError::Engine(EngineError::Lost { .. }));
        let msg = harness::error::Error::from(err).report();
        eprintln!("what the user sees:\n{msg}");
        assert!(
            lost,
            "{msg}\ndockerd log:\n{}",
            tail(&private.dir.join("dockerd.log"))
        );
        assert!(
            msg.contains("the Docker engine went away") && msg.contains("fix: start it again"),
            "{msg}"
        );
    }
    // The engine is back: the next run works.
    private.spawn();
    let engine = block_on(Engine::connect_to(&private.host())).unwrap();
    let out = block_on(run::run(&engine, &spec("after").cmd(["true"]))).unwrap();
    assert_eq!(out.exit_code, 0);
    drop(private);
    assert_eq!(
        Path::new("/sys/class/net/docker0").exists(),
        bridge_before,
        "the private engine must leave the host's network alone"
    );
}

#[test]
fn a_full_data_root_during_an_image_build_names_the_cause() {
    let _serial = crate::common::exclusive();
    let h = harness();
    let p = prepared("linux/amd64");
    let private = PrivateEngine::start("full", Some("400m"));
    private.load_from_main(&p.base.reference);
    let engine = block_on(Engine::connect_to(&private.host())).unwrap();
    let mut spec = h.image_spec(&p.platform, &p.base);
    spec.tag = "guix-matrix-diskfull:amd64".into();
    let started = Instant::now();
    let err = block_on(harness::image::build(&engine, &spec, &|_| {}))
        .expect_err("400 MiB cannot hold the image");
    let msg = err.to_string();
    eprintln!("what the user sees:\n{msg}");
    assert!(
        msg.contains("the engine's data root (") && msg.contains(") is full ("),
        "{msg}"
    );
    assert!(msg.contains("fix: free space"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(600));
    assert!(
        block_on(engine.local_image("guix-matrix-diskfull:amd64"))
            .unwrap()
            .is_none(),
        "nothing half-built is tagged"
    );
}
