//! The image as a long-lived container (the seed's interactive use): several
//! commands through the entry point, each with its own guix-daemon, none left
//! running between them, each exit code kept. The container's lifecycle is
//! testcontainers' (removed on drop); the image is the harness's.

use crate::common::{block_on, prepared};
use testcontainers::core::ExecCommand;
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

async fn exec(c: &testcontainers::ContainerAsync<GenericImage>, cmd: &[&str]) -> (i64, String) {
    let mut r = c
        .exec(ExecCommand::new(cmd.iter().copied()))
        .await
        .expect("exec");
    let out = String::from_utf8_lossy(&r.stdout_to_vec().await.expect("stdout")).into_owned();
    (
        r.exit_code().await.expect("exit code").expect("finished"),
        out,
    )
}

#[test]
fn one_container_many_commands_each_with_its_own_daemon() {
    let _shared = crate::common::shared();
    let p = prepared("linux/amd64");
    let (repo, tag) = p.image.tag.split_once(':').expect("repo:tag");
    block_on(async {
        let c = GenericImage::new(repo, tag)
            .with_entrypoint("sleep")
            .with_cmd(["infinity"])
            .with_platform(p.platform.docker.as_str())
            .with_cap_add("SYS_ADMIN")
            .with_cap_add("NET_ADMIN")
            .with_security_opt("seccomp=unconfined")
            .with_security_opt("apparmor=unconfined")
            .with_network("none")
            .with_label(harness::names::LABEL_MANAGED, "true")
            .start()
            .await
            .expect("start the image through testcontainers");
        let daemons = "n=0; for f in /proc/[0-9]*/comm; do [ \"$(cat $f 2>/dev/null)\" != guix-daemon ] || n=$((n+1)); done; echo $n";
        for (cmd, want) in [
            (vec!["/entry-point.sh", "guix", "--version"], 0),
            (vec!["/entry-point.sh", "sh", "-c", "exit 7"], 7),
            (vec!["/entry-point.sh", "guix", "gc", "--list-dead"], 0),
        ] {
            let (code, out) = exec(&c, &cmd).await;
            assert_eq!(code, want, "{cmd:?}: {out}");
            let (_, left) = exec(&c, &["bash", "-c", daemons]).await;
            assert_eq!(left.trim(), "0", "guix-daemon left after {cmd:?}");
        }
    });
}
