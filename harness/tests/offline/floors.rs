//! The house's floors are a rule, not a comment: every `crate::` path in a
//! module names only modules on floors below its own, as `src/lib.rs` lists
//! them, and every module `lib.rs` declares is on exactly one floor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `src/` of the harness crate.
fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The floors `lib.rs` writes (`//! N. name — what; name — what`): module → floor.
fn floors(lib: &str) -> BTreeMap<String, usize> {
    let line = regex::Regex::new(r"^//! (\d+)\. (.*)$").unwrap();
    let mut out = BTreeMap::new();
    for l in lib.lines() {
        let Some(c) = line.captures(l) else { continue };
        let floor: usize = c[1].parse().unwrap();
        for item in c[2].split("; ") {
            let name = item.split(" — ").next().unwrap().trim().to_string();
            assert!(
                out.insert(name.clone(), floor).is_none(),
                "lib.rs puts {name} on two floors"
            );
        }
    }
    out
}

/// The top-level modules a file's code names through `crate::`.
fn named(code: &str) -> Vec<String> {
    let comment = regex::Regex::new(r"(?m)//.*$").unwrap();
    let string = regex::Regex::new(r#""(?:[^"\\]|\\.)*""#).unwrap();
    let code = comment.replace_all(code, "");
    let code = string.replace_all(&code, "\"\"");
    let path = regex::Regex::new(r"crate::(\{[^}]*\}|\w+)").unwrap();
    let word = regex::Regex::new(r"(?:^\{|,)\s*(\w+)").unwrap();
    let mut out = vec![];
    for c in path.captures_iter(&code) {
        let g = &c[1];
        if g.starts_with('{') {
            out.extend(word.captures_iter(g).map(|w| w[1].to_string()));
        } else {
            out.push(g.to_string());
        }
    }
    out
}

/// Every `.rs` file of `module` (a file, or a folder of them).
fn files_of(module: &str) -> Vec<PathBuf> {
    let file = src().join(format!("{module}.rs"));
    if file.is_file() {
        return vec![file];
    }
    let mut out = vec![];
    let mut stack = vec![src().join(module)];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The imports that break the rule, as `file: module (floor) uses other (floor)`.
fn upward(floors: &BTreeMap<String, usize>) -> Vec<String> {
    let mut bad = vec![];
    for (module, floor) in floors {
        for file in files_of(module) {
            let code = std::fs::read_to_string(&file).unwrap();
            for other in named(&code) {
                match floors.get(&other) {
                    Some(f) if f > floor => {}
                    Some(_) if other == *module => {}
                    Some(f) => bad.push(format!(
                        "{}: {module} (floor {floor}) uses {other} (floor {f})",
                        file.display()
                    )),
                    None => {}
                }
            }
        }
    }
    bad
}

#[test]
fn no_module_uses_a_module_on_its_floor_or_above() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let floors = floors(&lib);
    let declared: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    assert!(!declared.is_empty(), "lib.rs declares no module");
    for m in &declared {
        assert!(
            floors.contains_key(m),
            "lib.rs declares {m} but puts it on no floor"
        );
    }
    assert_eq!(
        floors.len(),
        declared.len(),
        "lib.rs lists a floor module it does not declare"
    );
    let bad = upward(&floors);
    assert!(
        bad.is_empty(),
        "imports that run up the floors:\n{}",
        bad.join("\n")
    );
}

/// The check itself: an import that runs up is found, one that runs down is not.
#[test]
fn an_import_up_the_floors_is_found() {
    assert_eq!(
        named("use crate::{engine::Engine, names};\nlet x = crate::pipeline::Pipeline;"),
        ["engine", "names", "pipeline"]
    );
    assert!(named("// crate::cli in a comment\nlet s = \"crate::cli\";").is_empty());
}
