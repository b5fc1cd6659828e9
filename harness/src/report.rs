//! Results: the per-platform summary table, and the JSON and JUnit reports.

use crate::pull;
use crate::scenarios::Verdict;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use std::path::Path;

pub use crate::record::{Leg, ReportError, RunReport, VERSION};

/// One row per platform and scenario: platform, scenario, result, time, detail.
fn rows(legs: &[Leg]) -> Vec<[String; 5]> {
    let mut rows = vec![];
    for leg in legs {
        rows.push([
            leg.platform.clone(),
            "(prepare)".into(),
            if leg.error.is_some() {
                "FAILED".into()
            } else {
                "ok".into()
            },
            format!("{:.1}s", leg.prepare_time.as_secs_f64()),
            match &leg.error {
                Some(e) => first_line(e),
                None if leg.rebuilt => format!(
                    "image {} ({}); {} on {}; {}",
                    leg.image,
                    leg.start,
                    leg.placement.split(" (").next().unwrap_or_default(),
                    leg.engine,
                    crate::record::prepare_summary(&leg.prepare_steps)
                ),
                None => format!(
                    "image {} ({}); {} on {}",
                    leg.image,
                    leg.start,
                    leg.placement.split(" (").next().unwrap_or_default(),
                    leg.engine
                ),
            },
        ]);
        if let Some(stage) = &leg.pull {
            let result = match stage {
                pull::Stage::Pulled(_) => "pulled",
                pull::Stage::Kept(_) => "kept",
                pull::Stage::Skipped { .. } => "skipped",
            };
            let secs = stage.pulled().map_or(0, |p| match stage {
                pull::Stage::Pulled(_) => p.seconds,
                _ => 0,
            });
            rows.push([
                leg.platform.clone(),
                "(pull)".into(),
                result.into(),
                format!("{secs}.0s"),
                first_line(&stage.to_string()),
            ]);
        }
        for o in &leg.outcomes {
            let (result, detail) = match &o.verdict {
                Verdict::Passed => ("passed".to_string(), containers(o)),
                Verdict::Failed(why) => ("FAILED".to_string(), first_line(why)),
                Verdict::EmulatorCrash(why) => ("EMU-CRASH".to_string(), first_line(why)),
                Verdict::Skipped(why) => ("skipped".to_string(), first_line(why)),
            };
            rows.push([
                leg.platform.clone(),
                o.scenario.name().into(),
                result,
                format!("{:.1}s", o.elapsed.as_secs_f64()),
                detail,
            ]);
        }
    }
    rows
}

/// A passed check's detail: the containers it ran, each with its time.
fn containers(o: &crate::record::Outcome) -> String {
    let each: Vec<String> = o
        .containers
        .iter()
        .map(|c| format!("{} {:.1}s", c.step, c.elapsed.as_secs_f64()))
        .collect();
    match each.len() {
        0 => String::new(),
        n => format!("{n} container(s): {}", each.join(", ")),
    }
}

/// Per check, over every leg: its containers and their time, the costliest first.
pub fn per_check(legs: &[Leg]) -> String {
    let mut sums: std::collections::BTreeMap<&str, (usize, f64, f64)> = Default::default();
    for o in legs.iter().flat_map(|l| &l.outcomes) {
        let e = sums.entry(o.scenario.name()).or_default();
        e.0 += o.containers.len();
        e.1 += o
            .containers
            .iter()
            .map(|c| c.elapsed.as_secs_f64())
            .sum::<f64>();
        e.2 += o.elapsed.as_secs_f64();
    }
    let mut rows: Vec<_> = sums.into_iter().collect();
    rows.sort_by(|a, b| b.1 .2.total_cmp(&a.1 .2));
    let cells: Vec<String> = rows
        .iter()
        .map(|(name, (n, in_containers, total))| {
            format!("{name} {total:.0}s ({n} containers, {in_containers:.0}s in them)")
        })
        .collect();
    format!("per check, over every leg: {}", cells.join("; "))
}

const HEADER: [&str; 5] = ["platform", "scenario", "result", "time", "detail"];

/// The results as a Markdown table with the closing line (GitHub's step summary).
pub fn markdown(legs: &[Leg]) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut out = format!("| {} |\n|---|---|---|---:|---|\n", HEADER.join(" | "));
    for r in rows(legs) {
        out.push_str(&format!(
            "| {} |\n",
            r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
        ));
    }
    out.push_str(&format!("\n{}\n", closing_line(legs)));
    out
}

/// The summary table: one row per platform and scenario.
pub fn table(legs: &[Leg]) -> String {
    let mut rows: Vec<[String; 5]> = vec![HEADER.map(String::from)];
    rows.extend(self::rows(legs));
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            format!(
                "{:w0$}  {:w1$}  {:w2$}  {:>w3$}  {}",
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            )
            .trim_end()
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.len() > 120 {
        format!(
            "{}…",
            &line[..line.char_indices().nth(119).map_or(line.len(), |(i, _)| i)]
        )
    } else {
        line.to_string()
    }
}

/// The JUnit report: one suite per platform, one case per scenario.
pub fn junit(legs: &[Leg]) -> Report {
    let mut report = Report::new("guix-matrix");
    for leg in legs {
        let mut suite = TestSuite::new(leg.platform.clone());
        suite.add_property(("engine", leg.engine.as_str()));
        suite.add_property(("placement", leg.placement.as_str()));
        suite.add_property(("emulator", leg.emulator.as_str()));
        suite.add_property(("image", leg.image.as_str()));
        suite.add_property(("image-id", leg.image_id.as_str()));
        suite.add_property(("base", leg.base.as_str()));
        if let Some(err) = &leg.error {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status
                .set_message(first_line(err))
                .set_description(err.as_str());
            let mut case = TestCase::new("prepare", status);
            case.set_classname(leg.platform.clone())
                .set_time(leg.prepare_time);
            suite.add_test_case(case);
        }
        for o in &leg.outcomes {
            let status = match &o.verdict {
                Verdict::Passed => TestCaseStatus::success(),
                Verdict::Failed(why) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(first_line(why)).set_description(why.as_str());
                    s
                }
                Verdict::Skipped(why) => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(why.as_str());
                    s
                }
                Verdict::EmulatorCrash(why) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                    s.set_message(first_line(why))
                        .set_type("emulator-crash")
                        .set_description(why.as_str());
                    s
                }
            };
            let mut case = TestCase::new(o.scenario.name(), status);
            case.set_classname(leg.platform.clone())
                .set_time(o.elapsed)
                .set_system_out(o.log_tail.as_str());
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report
}

/// What a person needs about one failed leg, in one file: what failed, the
/// output tails and printed build logs, the emulator, image and pin, and the
/// command that reproduces exactly this leg.
pub fn failure_bundle(leg: &Leg, pin: &str) -> String {
    let mut out = format!(
        "guix-matrix failure bundle: {}\n\nreproduce: cargo run -p harness -- repro --platform {}{}{}{}\n\ncheckout: {}\nengine: {}\nruns: {}\nemulator: {}\nbase: {}\nimage: {} ({})\nchannel pin: {pin}\n",
        leg.platform,
        leg.platform,
        match leg.outcomes.iter().filter(|o| o.verdict.is_failure()).count() {
            1 => format!(
                " --scenario {}",
                leg.outcomes.iter().find(|o| o.verdict.is_failure()).map_or("", |o| o.scenario.name())
            ),
            _ => String::new(),
        },
        // The same release, pinned to what was vouched for: no rebuild.
        leg.release.as_ref().map_or_else(String::new, |r| format!(" {r}")),
        // A leg of another engine than the default reproduces there.
        if leg.engine.is_empty() || leg.engine == crate::engine::Engine::default_host() {
            String::new()
        } else {
            format!(" --engine {}={}", leg.platform, leg.engine)
        },
        leg.checkout,
        leg.engine,
        leg.placement,
        leg.emulator,
        leg.base,
        leg.image,
        leg.image_id,
    );
    if let Some(err) = &leg.error {
        out.push_str(&format!("\n== prepare failed\n{err}\n"));
    }
    for o in leg.outcomes.iter().filter(|o| o.verdict.is_failure()) {
        let (Verdict::Failed(why) | Verdict::EmulatorCrash(why)) = &o.verdict else {
            continue;
        };
        out.push_str(&format!(
            "\n== {} failed after {:.1}s\n{why}\n",
            o.scenario.name(),
            o.elapsed.as_secs_f64()
        ));
        out.push_str("\n-- facts\n");
        for (k, v) in &o.facts {
            out.push_str(&format!("{k}={v}\n"));
        }
        if !o.transcript.is_empty() {
            out.push_str(&format!("\n-- printed by the image\n{}\n", o.transcript));
        }
        out.push_str(&format!("\n-- last output\n{}\n", o.log_tail));
    }
    out
}

/// The warning a failure bundle opens with when the run is a pull request
/// from a fork (GitHub Actions' event file says so): its reproduce line and
/// checkout are that fork's code. Empty otherwise.
pub fn fork_warning() -> String {
    let event = std::env::var_os("GITHUB_EVENT_PATH");
    let repository = std::env::var("GITHUB_REPOSITORY").unwrap_or_default();
    let fork = event
        .and_then(|p| crate::paths::regular(Path::new(&p), 16 << 20).ok())
        .and_then(|f| serde_json::from_reader::<_, serde_json::Value>(f).ok())
        .and_then(|e| fork_of(&e, &repository));
    match fork {
        Some(fork) => format!(
            "WARNING: this run is of a pull request from the fork {fork}: the reproduce line below and the checkout it runs in are that fork's code, not {repository}'s; read them before you run them.\n\n"
        ),
        None => String::new(),
    }
}

/// The fork a pull-request event comes from, when it is not `repository`.
fn fork_of(event: &serde_json::Value, repository: &str) -> Option<String> {
    let head = event["pull_request"]["head"]["repo"]["full_name"].as_str()?;
    (head != repository).then(|| head.to_string())
}

/// Writes report.json and junit.xml into `dir`, and `failures/<platform>.txt`
/// for each failed leg (`pin`: the guix channel pin the legs ran with).
pub fn write(dir: &Path, report: &RunReport) -> std::io::Result<()> {
    let (legs, pin) = (&report.legs, report.pin.as_str());
    std::fs::create_dir_all(dir)?;
    let failures = dir.join("failures");
    let _ = std::fs::remove_dir_all(&failures);
    for leg in legs.iter().filter(|l| l.failed()) {
        std::fs::create_dir_all(&failures)?;
        let name = leg.platform.trim_start_matches("linux/").replace('/', "-");
        std::fs::write(
            failures.join(format!("{name}.txt")),
            format!("{}{}", fork_warning(), failure_bundle(leg, pin)),
        )?;
    }
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(report)?)?;
    let xml = junit(legs).to_string().map_err(std::io::Error::other)?;
    std::fs::write(dir.join("junit.xml"), xml)
}

/// The closing line every test-runner reader understands.
pub fn closing_line(legs: &[Leg]) -> String {
    let mut passed = 0;
    let mut failed = 0;
    let mut skipped = 0;
    for leg in legs {
        if leg.error.is_some() {
            failed += 1;
        }
        for o in &leg.outcomes {
            match o.verdict {
                Verdict::Passed => passed += 1,
                Verdict::Failed(_) | Verdict::EmulatorCrash(_) => failed += 1,
                Verdict::Skipped(_) => skipped += 1,
            }
        }
    }
    format!("harness: {passed} passed, {failed} failed, {skipped} skipped")
}

#[cfg(test)]
mod fork_tests {
    /// A pull request from another repository is a fork's; one from a
    /// branch of the repository itself, or a push, is not.
    #[test]
    fn a_pull_request_from_another_repository_is_a_forks() {
        let pr = |head: &str| serde_json::json!({"pull_request": {"head": {"repo": {"full_name": head}}}});
        assert_eq!(
            super::fork_of(&pr("someone/guix-matrix"), "owner/guix-matrix"),
            Some("someone/guix-matrix".into())
        );
        assert_eq!(
            super::fork_of(&pr("owner/guix-matrix"), "owner/guix-matrix"),
            None
        );
        assert_eq!(
            super::fork_of(
                &serde_json::json!({"ref": "refs/heads/main"}),
                "owner/guix-matrix"
            ),
            None
        );
    }
}
