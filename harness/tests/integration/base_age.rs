//! Bases too old for matrix.toml's `max_base_age_days` are rebuilt from the
//! mirror when Debian has a newer suite there, and kept when it has not.

use crate::common::{block_on, harness};
use harness::base::{self, mirror};
use std::process::Command;

/// A copy of `from` with the base date label `date`, as `tag`: its ID.
fn dated(from: &str, tag: &str, date: &str) -> String {
    let label = harness::names::LABEL_BASE_DATE;
    crate::common::docker_build(tag, &format!("FROM {from}\nLABEL {label}={date}\n"))
}

/// A base dated as the mirror's suite is kept however old; one dated years
/// before it is rebuilt by mmdebstrap, dated by the mirror's Release file
/// (label and `created`). Under an image name of its own.
#[test]
fn a_base_older_than_max_base_age_days_is_rebuilt_when_the_mirror_has_newer() {
    let _all = crate::common::exclusive();
    let h = harness();
    let mut defaults = h.matrix.defaults.clone();
    defaults.image = "guix-matrix-agetest".into();
    let amd64 = h.matrix.find("linux/amd64").unwrap();
    let tag = harness::names::base(&defaults, amd64);
    let real = crate::common::prepared("linux/amd64").base.reference;
    let suite = block_on(mirror::release(&defaults, &defaults.suite)).unwrap();
    let cleanup = || {
        let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    };

    // As old as the mirror's suite: kept, whatever max_base_age_days says.
    let same = dated(&real, &tag, &mirror::rfc3339(suite.date));
    defaults.max_base_age_days = 1;
    let kept = block_on(base::ensure(&h.engine, &defaults, amd64, false));
    let kept = kept.unwrap_or_else(|e| {
        cleanup();
        panic!("{e}")
    });
    assert_eq!(kept.id, same, "a base as new as the mirror's suite is kept");

    // Years older: rebuilt from the mirror.
    let old = dated(&real, &tag, "2020-01-01T00:00:00Z");
    let rebuilt = block_on(base::ensure(&h.engine, &defaults, amd64, false));
    let img = block_on(h.engine.local_image(&tag)).unwrap();
    cleanup();
    let rebuilt = rebuilt.unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(rebuilt.id, old, "the old base was rebuilt");
    assert_eq!(rebuilt.origin, base::Origin::BuiltOffline);
    assert_eq!(
        rebuilt.date,
        Some(suite.date),
        "dated by the mirror's Release"
    );
    let img = img.expect("the rebuilt base is tagged");
    assert_eq!(
        img.labels.get(harness::names::LABEL_BASE_DATE),
        Some(&mirror::rfc3339(suite.date))
    );
    assert_eq!(img.created, Some(suite.date));
}

/// mmdebstrap honours SOURCE_DATE_EPOCH (the mirror's Release date) and the
/// harness writes the base's config from it: the base built twice from the
/// same mirror is the same image, root filesystem and config. Under an
/// image name of its own.
#[test]
fn the_base_built_twice_from_the_same_mirror_is_the_same_image() {
    let _all = crate::common::shared();
    let h = harness();
    let mut defaults = h.matrix.defaults.clone();
    defaults.image = "guix-matrix-twicetest".into();
    // Nothing local to take instead: mmdebstrap both times.
    defaults.base_image = "guix-matrix-twicetest-none:absent".into();
    let amd64 = h.matrix.find("linux/amd64").unwrap();
    let tag = harness::names::base(&defaults, amd64);
    let build = || {
        let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
        let built = block_on(base::ensure(&h.engine, &defaults, amd64, false));
        let img = block_on(h.engine.local_image(&tag)).unwrap();
        (built.map_err(|e| e.to_string()), img)
    };
    let (first, one) = build();
    let (second, two) = build();
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.origin, base::Origin::BuiltOffline);
    assert_eq!(second.origin, base::Origin::BuiltOffline);
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one.layers, two.layers, "the same root filesystem");
    assert_eq!(first.id, second.id, "the same image");
}
