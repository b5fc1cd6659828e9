//! guix-matrix harness: builds the Guix image on every platform of matrix.toml
//! through the Docker engine and checks what the image promises.
//!
//! The house, floor by floor from the top: a module uses only modules on
//! floors below its own (checked by `tests/offline/floors.rs`).
//! 1. cli — one file per command
//! 2. leg — one platform's checks, run and recorded
//! 3. report — the table, report.json, JUnit, the failure bundle
//! 4. scenarios — what each check runs and looks at
//! 5. fleet — which engine runs which legs
//! 6. pipeline — prepare on one engine: machine facts, build stages, the pull stage, starting from a release
//! 7. error — every failure, its fix and exit code
//! 8. release — making a release (gate, export, oci, dist, push, ship, contents) and reading one (source, trust, signature, open, archive, input, reuse, rebuild)
//! 9. doctor — is this machine ready; recipe — what the tree builds and its content hash; record — the run's records (legs, report.json)
//! 10. base — the Debian base, its date and the mirror's; emulators — binfmt handlers through the helper; pin — the pinned channel; pull — the pull stage's job and record
//! 11. engine — the only code that speaks bollard; placement — native or which emulator, per engine
//! 12. names — every image, label and artifact name; registry — the only code that speaks HTTP to registries; retry — back-off for network steps
//! 13. matrix — matrix.toml, typed and checked
//! 14. host — facts of this host; paths — the checkout and bounded file reads; text — text helpers; epoch — an image archive with the times of its build taken out

pub mod cli;

pub mod leg;

pub mod report;

pub mod scenarios;

pub mod fleet;

pub mod pipeline;

pub mod error;

pub mod release;

pub mod doctor;
pub mod recipe;
pub mod record;

pub mod base;
pub mod emulators;
pub mod pin;
pub mod pull;

pub mod engine;
pub mod placement;

pub mod names;
pub mod registry;
pub mod retry;

pub mod matrix;

pub mod epoch;
pub mod host;
pub mod paths;
pub mod text;
