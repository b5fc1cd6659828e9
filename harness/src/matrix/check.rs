//! Every check of a loaded matrix, all problems at once, each with its line, platform, field and fix.

use super::{Defaults, Matrix, Platform};
use std::collections::{HashMap, HashSet};
use toml::de::{DeTable, DeValue};

/// One thing wrong in matrix.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the field (or of its table) when known.
    pub line: Option<usize>,
    /// The platform's `docker` value, or `[defaults]`.
    pub table: String,
    pub field: &'static str,
    pub message: String,
    pub fix: String,
}

/// Where each field of the file stands: `[defaults]` and each `[[platform]]` in order.
#[derive(Debug, Default)]
struct Lines {
    defaults: HashMap<String, usize>,
    platforms: Vec<(usize, HashMap<String, usize>)>,
    runners: Vec<(usize, HashMap<String, usize>)>,
}

impl Lines {
    fn of(text: &str) -> Self {
        let line = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let fields = |table: &DeTable| -> HashMap<String, usize> {
            table
                .iter()
                .map(|(k, v)| (k.get_ref().to_string(), line(v.span().start)))
                .collect()
        };
        let mut lines = Lines::default();
        let Ok(root) = DeTable::parse(text) else {
            return lines;
        };
        for (key, value) in root.get_ref().iter() {
            match (key.get_ref().as_ref(), value.get_ref()) {
                ("defaults", DeValue::Table(t)) => lines.defaults = fields(t),
                (name @ ("platform" | "runner"), DeValue::Array(rows)) => {
                    let list = if name == "platform" {
                        &mut lines.platforms
                    } else {
                        &mut lines.runners
                    };
                    for row in rows.iter() {
                        if let DeValue::Table(t) = row.get_ref() {
                            list.push((line(row.span().start), fields(t)));
                        }
                    }
                }
                _ => {}
            }
        }
        lines
    }
}

/// All problems of `m` (whose text is `text`); empty when it is sound.
pub fn problems(m: &Matrix, text: &str) -> Vec<Problem> {
    let lines = Lines::of(text);
    let mut out = vec![];
    let mut say = |line: Option<usize>, table: &str, field, message: String, fix: String| {
        out.push(Problem {
            line,
            table: table.to_string(),
            field,
            message,
            fix,
        })
    };
    for (field, message, fix) in defaults(&m.defaults) {
        say(
            lines.defaults.get(field).copied(),
            "[defaults]",
            field,
            message,
            fix,
        );
    }
    let mut seen = HashSet::new();
    for (i, p) in m.platforms.iter().enumerate() {
        let (table_line, fields) = lines
            .platforms
            .get(i)
            .map(|(l, f)| (Some(*l), f.clone()))
            .unwrap_or_default();
        let at = |field: &str| fields.get(field).copied().or(table_line);
        if !seen.insert(p.docker.clone()) {
            say(
                at("docker"),
                &p.docker,
                "docker",
                "listed twice".into(),
                "keep one [[platform]] per Docker platform".into(),
            );
        }
        for (field, message, fix) in platform(p) {
            say(at(field), &p.docker, field, message, fix);
        }
    }
    let mut arches = HashSet::new();
    for (i, r) in m.runners.iter().enumerate() {
        let at = |field: &str| {
            lines
                .runners
                .get(i)
                .and_then(|(l, f)| f.get(field).copied().or(Some(*l)))
        };
        let table = format!("[[runner]] {}", r.arch);
        if !ENGINE_ARCHES.contains(&r.arch.as_str()) {
            say(
                at("arch"),
                &table,
                "arch",
                format!(
                    "`{}` is not an engine architecture the harness knows",
                    r.arch
                ),
                format!("use Docker's name of one: {}", ENGINE_ARCHES.join(", ")),
            );
        } else if !arches.insert(r.arch.clone()) {
            say(
                at("arch"),
                &table,
                "arch",
                "listed twice".into(),
                "keep one [[runner]] per architecture".into(),
            );
        }
        if r.label.trim().is_empty() || r.label.contains(char::is_whitespace) {
            say(
                at("label"),
                &table,
                "label",
                format!("`{}` is not a runner label", r.label),
                "a GitHub Actions runs-on label, e.g. label = \"ubuntu-24.04-arm\"".into(),
            );
        }
    }
    out.sort_by_key(|p| p.line);
    out
}

type Found = (&'static str, String, String);

fn defaults(d: &Defaults) -> Vec<Found> {
    let mut out: Vec<Found> = vec![];
    if !(1..=86_400).contains(&d.step_timeout_secs) {
        out.push((
            "step_timeout_secs",
            format!(
                "{} is out of range (1 to 86400 seconds)",
                d.step_timeout_secs
            ),
            "give one step's timeout on a native platform, e.g. 600".into(),
        ));
    }
    let url = regex::Regex::new(r"^(https?|file)://[^\s/]+(/\S*)?$").expect("regex");
    if !url.is_match(&d.mirror) {
        out.push((
            "mirror",
            format!("`{}` is not an http(s):// or file:// URL", d.mirror),
            "e.g. mirror = \"http://deb.debian.org/debian\"".into(),
        ));
    }
    if !is_reference(&d.base_image) {
        out.push((
            "base_image",
            format!("`{}` is not a Docker image reference", d.base_image),
            "e.g. base_image = \"debian:sid-slim\" (lowercase name, optional :tag or @sha256:digest)".into(),
        ));
    }
    if !is_repository(&d.image) {
        out.push((
            "image",
            format!("`{}` is not a Docker repository name (lowercase, no tag: the harness adds one per platform)", d.image),
            "e.g. image = \"guix-matrix\"".into(),
        ));
    }
    let suite = regex::Regex::new(r"^[a-z][a-z0-9-]*$").expect("regex");
    for (field, value) in [("suite", &d.suite), ("probe_suite", &d.probe_suite)] {
        if !suite.is_match(value) {
            out.push((
                field,
                format!("`{value}` is not a Debian suite name"),
                "e.g. \"sid\" or \"bookworm\"".into(),
            ));
        }
    }
    for (i, u) in d.pull_substitutes.iter().enumerate() {
        if !u.starts_with("https://") || u.contains(char::is_whitespace) {
            out.push((
                "pull_substitutes",
                format!("entry {} `{u}` is not an https:// URL", i + 1),
                "list the official build farms, e.g. [\"https://ci.guix.gnu.org\", \"https://bordeaux.guix.gnu.org\"]".into(),
            ));
        }
    }
    let key = regex::Regex::new(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.pub$").expect("regex");
    for k in &d.pull_keys {
        if !key.is_match(k) {
            out.push((
                "pull_keys",
                format!("`{k}` is not the name of a key file in substitutes/ (NAME.pub)"),
                "name the official farms' keys, e.g. [\"berlin.guix.gnu.org.pub\", \"bordeaux.guix.gnu.org.pub\"]".into(),
            ));
        }
    }
    if d.pull_substitutes.is_empty() != d.pull_keys.is_empty() {
        out.push((
            "pull_keys",
            "pull_substitutes and pull_keys must both list something (or both nothing: the image's own servers and keys)".into(),
            "give the official build farms and their keys".into(),
        ));
    }
    if d.max_base_age_days == 0 {
        out.push((
            "max_base_age_days",
            "0 would rebuild the base on every run".into(),
            "give a number of days, e.g. 30".into(),
        ));
    }
    let version = regex::Regex::new(r"^[0-9]+(\.[0-9]+)+$").expect("regex");
    if !version.is_match(&d.guix_version) {
        out.push((
            "guix_version",
            format!("`{}` is not a version such as \"1.5.0\"", d.guix_version),
            "the version `guix --version` prints".into(),
        ));
    }
    out
}

fn platform(p: &Platform) -> Vec<Found> {
    let mut out: Vec<Found> = vec![];
    if !(p.slowdown.is_finite() && (1.0..=100.0).contains(&p.slowdown)) {
        out.push((
            "slowdown",
            format!("{:?} is out of range (1.0 to 100.0)", p.slowdown),
            "how much slower under qemu than native the platform runs: about 6.0".into(),
        ));
    }
    if !(60..=172_800).contains(&p.pull_timeout_secs) {
        out.push((
            "pull_timeout_secs",
            format!(
                "{} is out of range (60 to 172800 seconds)",
                p.pull_timeout_secs
            ),
            "give the pull's limit on a native engine, e.g. 3600 (under qemu it is multiplied by slowdown)".into(),
        ));
    }
    out.extend(form(p));
    out
}

/// Docker's names of engine architectures (Go's GOARCH): the vocabulary of
/// `docker` platforms, `compat` and `[[runner]] arch`. Not a platform
/// table: what each platform is lives in matrix.toml alone, and every leg's
/// smoke check measures it (`uname -m`, `dpkg --print-architecture`, Guix's
/// `%current-system`, the emulator that ran it).
const ENGINE_ARCHES: &[&str] = &[
    "amd64", "386", "arm", "arm64", "ppc64le", "riscv64", "s390x", "mips64le", "loong64",
];

/// Each field of a platform's row has the form of what it names.
fn form(p: &Platform) -> Vec<Found> {
    let mut out: Vec<Found> = vec![];
    let docker = regex::Regex::new(r"^linux/([a-z0-9]+)(/v[0-9]+)?$").expect("regex");
    let arch_ok = docker
        .captures(&p.docker)
        .is_some_and(|c| ENGINE_ARCHES.contains(&&c[1]));
    if !arch_ok {
        out.push((
            "docker",
            format!(
                "`{}` is not a Docker platform such as linux/arm/v7",
                p.docker
            ),
            format!(
                "docker = \"linux/ARCH[/VARIANT]\", ARCH one of {}",
                ENGINE_ARCHES.join(", ")
            ),
        ));
    }
    let mut shaped = |field, have: &str, pattern: &str, what: &str, fix: &str| {
        if !regex::Regex::new(pattern).expect("regex").is_match(have) {
            out.push((field, format!("`{have}` is not {what}"), fix.to_string()));
        }
    };
    shaped(
        "guix_system",
        &p.guix_system,
        r"^[a-z0-9_]+-linux$",
        "a Guix system such as \"armhf-linux\"",
        "the system `guix build --system` takes for it",
    );
    shaped(
        "debian_arch",
        &p.debian_arch,
        r"^[a-z0-9]+$",
        "a Debian architecture such as \"armhf\"",
        "what `dpkg --print-architecture` says on it",
    );
    shaped(
        "emulator",
        &p.emulator,
        r"^qemu-[a-z0-9_]+$",
        "a qemu-user handler such as \"qemu-arm\"",
        "the handler's name in Debian's qemu-user-static (/usr/lib/binfmt.d/qemu-*.conf)",
    );
    shaped(
        "uname_m",
        &p.uname_m,
        r"^[a-z0-9_]+$",
        "a machine such as \"armv7l\"",
        "what `uname -m` says on it",
    );
    if let Some(cc) = &p.probe_cc {
        shaped(
            "probe_cc",
            cc,
            r"^[a-z0-9_.-]+-gcc$",
            "a cross compiler such as \"arm-linux-gnueabihf-gcc\"",
            "Debian's gcc for its multiarch triplet",
        );
    }
    for (arch, uname) in &p.compat {
        if !ENGINE_ARCHES.contains(&arch.as_str()) || *arch == p.arch() || uname.is_empty() {
            out.push((
                "compat",
                format!("`{arch} = \"{uname}\"` is not another engine architecture that runs it"),
                "compat = { ARCH = \"UNAME_M\" } for each other engine whose CPU runs it natively"
                    .into(),
            ));
        }
    }
    out
}

/// `name[:tag]` or `name@sha256:…`, with an optional registry host.
fn is_reference(s: &str) -> bool {
    let (name, rest) = match s.split_once('@') {
        Some((n, digest)) => (
            n,
            regex::Regex::new(r"^sha256:[0-9a-f]{64}$")
                .expect("regex")
                .is_match(digest),
        ),
        None => match s.rsplit_once(':') {
            Some((n, tag)) if !tag.contains('/') => (
                n,
                regex::Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
                    .expect("regex")
                    .is_match(tag),
            ),
            _ => (s, true),
        },
    };
    rest && is_repository(name)
}

/// A repository name: optional `host[:port]/`, then lowercase path components.
fn is_repository(s: &str) -> bool {
    let component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
    let re = regex::Regex::new(&format!(
        r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{component}(?:/{component})*$"
    ))
    .expect("regex");
    re.is_match(s) && s.len() <= 255
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_repositories() {
        for good in [
            "debian:sid-slim",
            "debian",
            "127.0.0.1:5000/guix/matrix:v20260106",
            "debian@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(is_reference(good), "{good}");
        }
        for bad in [
            "Debian:sid",
            "debian:",
            "debian:sid slim",
            "",
            "a@sha256:xyz",
        ] {
            assert!(!is_reference(bad), "{bad}");
        }
        assert!(is_repository("guix-matrix"));
        assert!(!is_repository("guix-matrix:latest"));
        assert!(!is_repository("Guix"));
    }
}
