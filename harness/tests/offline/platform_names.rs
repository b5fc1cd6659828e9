//! Platform names as users type them resolve to matrix.toml's rows as
//! Docker resolves them, and no name is two rows'.

use harness::matrix::Matrix;
use harness::paths::Checkout;

fn matrix() -> Matrix {
    Matrix::load(Checkout::find().unwrap().matrix()).unwrap()
}

#[test]
fn the_names_docker_buildx_and_uname_use_find_their_row() {
    let m = matrix();
    for (typed, row) in [
        ("linux/arm64", "linux/arm64/v8"),
        ("arm64", "linux/arm64/v8"),
        ("aarch64", "linux/arm64/v8"),
        ("linux/arm", "linux/arm/v7"),
        ("armv7", "linux/arm/v7"),
        ("armhf", "linux/arm/v7"),
        ("x86_64", "linux/amd64"),
        ("amd64", "linux/amd64"),
        ("i386", "linux/386"),
        ("i686", "linux/386"),
        ("ppc64el", "linux/ppc64le"),
        ("riscv64-linux", "linux/riscv64"),
    ] {
        let found = m.find(typed).unwrap_or_else(|e| panic!("{typed}: {e}"));
        assert_eq!(found.docker, row, "{typed}");
    }
}

#[test]
fn no_name_belongs_to_two_rows_and_an_unknown_one_lists_them() {
    let m = matrix();
    let mut owner = std::collections::BTreeMap::new();
    for p in &m.platforms {
        for n in p.names() {
            if let Some(other) = owner.insert(n.clone(), p.docker.clone()) {
                assert_eq!(other, p.docker, "`{n}` names {other} and {}", p.docker);
            }
        }
    }
    let e = m.find("sparc64").unwrap_err().to_string();
    assert!(
        e.contains("linux/arm64/v8 (") && e.contains("aarch64"),
        "{e}"
    );
}

/// `run` with a name no row has says so first and alone: no checkout
/// header, no engine asked, exit 2 with the accepted names.
#[test]
fn run_with_an_unknown_platform_says_only_that() {
    let out = crate::common::command()
        .args(["run", "--platform", "sparc64"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sparc64") && stderr.contains("aarch64"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing before the error: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
