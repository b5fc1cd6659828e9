//! No input makes the harness panic: arbitrary edits of matrix.toml and
//! arbitrary command lines give a value or an error, never a backtrace
//! (bounded: 512 cases each, in `cargo test`).

use harness::cli::Cli;
use harness::matrix::Matrix;
use proptest::prelude::*;
use std::path::Path;
use std::time::Duration;

fn real_matrix() -> String {
    std::fs::read_to_string(harness::paths::Checkout::find().unwrap().matrix()).unwrap()
}

/// A value TOML may hold, including the extremes that once overflowed a Duration.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("1e300".to_string()),
        Just("inf".to_string()),
        Just("nan".to_string()),
        Just("-0.0".to_string()),
        "[a-z/:._ -]{0,24}".prop_map(|s| format!("{s:?}")),
        Just("[]".to_string()),
        Just("true".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Replace the value of one `key = value` line of the real matrix.toml.
    #[test]
    fn any_value_in_any_field_is_an_error_or_a_sound_matrix(line in 0usize..200, v in value()) {
        let text = real_matrix();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let assignments: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].contains(" = ") && !lines[i].starts_with('#'))
            .collect();
        let i = assignments[line % assignments.len()];
        let key = lines[i].split(" = ").next().unwrap().to_string();
        lines[i] = format!("{key} = {v}");
        check(&lines.join("\n"));
    }

    /// Arbitrary bytes, and the real file cut anywhere.
    #[test]
    fn any_text_is_an_error_or_a_sound_matrix(junk in ".{0,200}", cut in 0usize..4000) {
        check(&junk);
        let text = real_matrix();
        let cut = text.char_indices().map(|(i, _)| i).find(|&i| i >= cut).unwrap_or(text.len());
        check(&text[..cut]);
    }

    /// Arbitrary command lines parse or give clap's usage error.
    #[test]
    fn any_command_line_parses_or_is_a_usage_error(args in proptest::collection::vec(
        prop_oneof![
            Just("run".to_string()), Just("repro".to_string()), Just("pin".to_string()),
            Just("--platform".to_string()), Just("--jobs".to_string()), Just("--heartbeat".to_string()),
            Just("--scenario".to_string()), Just("--set".to_string()), Just("-vvv".to_string()),
            Just("--color".to_string()), Just("--".to_string()),
            "[a-z0-9/_-]{0,12}".prop_map(String::from),
            any::<i64>().prop_map(|n| n.to_string()),
        ],
        0..8,
    )) {
        let argv = std::iter::once("harness".to_string()).chain(args);
        if let Err(e) = <Cli as clap::Parser>::try_parse_from(argv) {
            prop_assert!([0, 2].contains(&e.exit_code()), "{e}");
        }
    }
}

/// Parsing never panics; a matrix that is accepted gives timeouts and leg
/// budgets that fit in a Duration.
fn check(text: &str) {
    if let Ok(m) = Matrix::parse(Path::new("matrix.toml"), text) {
        for p in &m.platforms {
            let step = p.timeout(Duration::from_secs(m.defaults.step_timeout_secs));
            assert!(step.checked_mul(64).is_some(), "{}: {step:?}", p.docker);
        }
    }
}
