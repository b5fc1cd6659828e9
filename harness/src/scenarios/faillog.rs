//! Failure logs: the failed derivations' logs land in the working directory, unpacked and printed; nothing else does.

use super::{fixtures_tar, kv, run_fixture, spec, Check};
use crate::error::Error;
use crate::pipeline::{Pipeline, Prepared};

pub async fn body(h: &Pipeline, p: &Prepared, c: &mut Check) -> Result<(), Error> {
    let tar = fixtures_tar(h, &["faillog.sh", "failing.scm", "earlier-failure.scm"])?;
    let run = spec(h, p, "faillog")
        .bash("/fixtures/faillog.sh")
        .upload(tar, "/");
    let out = run_fixture(h, c, &run).await?;
    let (earlier, rc) = (
        kv(&out.stdout, "earlier-rc").unwrap_or_default(),
        kv(&out.stdout, "command-rc").unwrap_or_default(),
    );
    c.fact("earlier-rc", &earlier);
    c.fact("command-rc", &rc);
    match kv(&out.stdout, "earlier-shared-on") {
        Some(on) => c.shared_on("earlier-failure", &on),
        None => c.expect(earlier != "0" && !earlier.is_empty(), || {
            format!("the earlier failing build exited `{earlier}`")
        }),
    }
    // `guix build` exits 1 when a build fails; the entry point must hand that back.
    c.expect(rc == "1", || {
        format!("expected guix build's own exit code 1, got `{rc}`")
    });

    let mut files: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("workdir-file="))
        .collect();
    files.sort();
    c.fact("workdir-files", files.join(" "));
    let is_hash_name = |f: &str, suffix: &str| {
        f.len() > 33
            && f.as_bytes()[32] == b'-'
            && f[33..] == *suffix
            && f[..32].bytes().all(|b| b.is_ascii_alphanumeric())
    };
    c.expect(
        files.len() == 2
            && files.iter().any(|f| is_hash_name(f, "guix-matrix-fails.drv.gz"))
            && files.iter().any(|f| is_hash_name(f, "guix-matrix-fails.drv.log")),
        || {
            format!("the working directory should hold exactly the failed derivation's .drv.gz and its unpacked log, found {files:?}")
        },
    );
    let unpacked = kv(&out.stdout, "unpacked").unwrap_or_default();
    c.expect(
        unpacked.contains(r#"URL "file:///nonexistent" is for a local file"#),
        || format!("the unpacked log does not hold the builder's error: `{unpacked}`"),
    );
    let command = out
        .stdout
        .split("--- command output\n")
        .nth(1)
        .unwrap_or_default();
    // Between the first marker and the last, without the entry point's trace (`+ ...`).
    let lines: Vec<&str> = command.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.starts_with("guix-matrix: ==> build log of "));
    let last = lines
        .iter()
        .rposition(|l| l.starts_with("guix-matrix: <== end of build log"));
    let printed: Vec<&str> = match (first, last) {
        (Some(a), Some(b)) if a <= b => lines[a..=b]
            .iter()
            .copied()
            .filter(|l| !l.starts_with('+'))
            .collect(),
        _ => vec![],
    };

    c.expect(
        printed
            .last()
            .is_some_and(|l| l.starts_with("guix-matrix: <== end of build log")),
        || format!("the entry point did not print the log between its markers: {printed:?}"),
    );
    c.expect(
        !command.contains("guix-matrix-earlier") && !command.contains("image-build-time"),
        || "the entry point reported a log from before the command".into(),
    );
    c.transcript(printed.join("\n"));
    Ok(())
}
