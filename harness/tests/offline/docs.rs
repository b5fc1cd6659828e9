//! The documents name every option and environment variable the code reads,
//! and nothing that does not exist: README.md (the image's users),
//! docs/harness.md (the harness), CONTRIBUTING.md (maintainers).

use clap::CommandFactory;
use std::collections::BTreeSet;

fn root() -> std::path::PathBuf {
    harness::paths::Checkout::find().unwrap().root
}

fn docs() -> String {
    ["README.md", "docs/harness.md", "CONTRIBUTING.md"]
        .iter()
        .map(|f| std::fs::read_to_string(root().join(f)).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every long option of every command, and every variable clap reads.
fn cli() -> (BTreeSet<String>, BTreeSet<String>) {
    fn walk(cmd: &clap::Command, opts: &mut BTreeSet<String>, vars: &mut BTreeSet<String>) {
        for a in cmd.get_arguments() {
            if let Some(l) = a.get_long() {
                if l != "help" && l != "version" {
                    opts.insert(format!("--{l}"));
                }
            }
            if let Some(e) = a.get_env() {
                vars.insert(e.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, opts, vars);
        }
    }
    let (mut opts, mut vars) = (BTreeSet::new(), BTreeSet::new());
    walk(&harness::cli::Cli::command(), &mut opts, &mut vars);
    (opts, vars)
}

/// The variables the harness's source reads besides clap's, and those the
/// image's scripts take from their environment.
fn read_by_code() -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    let rust = regex::Regex::new(r#"(?:env::var(?:_os)?|from_env)\("([A-Z_]+)"\)"#).unwrap();
    let shell = regex::Regex::new(r"\$\{((?:GUIX|XDG)_[A-Z_]+)[-:+=]").unwrap();
    let mut files = vec![];
    let mut dirs = vec![root().join("harness/src"), root().join("scripts")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for re in [&rust, &shell] {
            for c in re.captures_iter(&text) {
                vars.insert(c[1].to_string());
            }
        }
    }
    // The shell's own and the system's, not the harness's or the image's;
    // a marker a test fixture's profile exports, which the check reads back.
    for not_ours in ["HOME", "PATH", "GUIX_MATRIX_FIXTURE_PROFILE"] {
        vars.remove(not_ours);
    }
    vars
}

#[test]
fn every_option_and_variable_is_documented_and_every_documented_one_exists() {
    let text = docs();
    let (opts, clap_vars) = cli();
    let mut vars = read_by_code();
    vars.extend(clap_vars);
    // The old names of renamed variables, still read (with a deprecation line).
    vars.extend(harness::cli::RENAMED.iter().map(|(old, _)| old.to_string()));
    let undocumented: Vec<_> = opts
        .iter()
        .filter(|o| !text.contains(o.as_str()))
        .chain(vars.iter().filter(|v| !text.contains(v.as_str())))
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in README.md, docs/harness.md or CONTRIBUTING.md: {undocumented:?}"
    );

    // The other way: every option on a `harness` command line of the docs,
    // and every GUIX_MATRIX_ variable they name, exists.
    let line = regex::Regex::new(r"harness -- ([a-z]+)([^\n`|#]*)").unwrap();
    let flag = regex::Regex::new(r"(?:^|\s)(--[a-z][a-z0-9-]*)").unwrap();
    let mut unknown = vec![];
    for c in line.captures_iter(&text) {
        for f in flag.captures_iter(&c[2]) {
            if !opts.contains(&f[1]) {
                unknown.push(format!("`harness {}`: {}", &c[1], &f[1]));
            }
        }
    }
    let var = regex::Regex::new(r"GUIX_MATRIX_[A-Z_]*[A-Z]").unwrap();
    // The benchmarks' variable, and the workflows' secrets and variables
    // (GUIX_MATRIX_CI_KEY, GUIX_MATRIX_CI_PUB) as the workflows name them.
    let workflows: String = std::fs::read_dir(root().join(".github/workflows"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let in_workflows = |v: &str| {
        workflows.contains(&format!("secrets.{v}")) || workflows.contains(&format!("vars.{v}"))
    };
    for v in var.find_iter(&text) {
        let v = v.as_str();
        if !vars.contains(v) && v != "GUIX_MATRIX_BENCH_PLATFORMS" && !in_workflows(v) {
            unknown.push(v.to_string());
        }
    }
    unknown.sort();
    unknown.dedup();
    assert!(
        unknown.is_empty(),
        "the docs name what does not exist: {unknown:?}"
    );
}

#[test]
fn the_readmes_ci_examples_are_the_tested_files_verbatim() {
    let root = harness::paths::Checkout::find().unwrap().root;
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let dir = root.join("examples/ci");
    let mut shown = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".scm") {
            continue;
        }
        let marker = format!("<!-- examples/ci/{name} -->\n");
        let at = readme.find(&marker).unwrap_or_else(|| {
            panic!(
                "README.md does not show examples/ci/{name} (`{}`)",
                marker.trim()
            )
        });
        let rest = &readme[at + marker.len()..];
        let body = rest.split_once('\n').map(|(_, b)| b).unwrap_or_default();
        let body = &body[..body.find("```").unwrap_or(body.len())];
        let file = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert_eq!(
            body, file,
            "README.md's copy of examples/ci/{name} differs from the file the tests run"
        );
        shown += 1;
    }
    assert!(shown >= 6, "{shown} examples");
}
