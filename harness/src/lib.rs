//! guix-matrix harness: builds the Guix image on every platform of matrix.toml
//! through the Docker engine and checks what the image promises.
//!
//! The modules follow the pipeline, each using only those listed after it:
//! cli → leg → report → scenarios → fleet → harness → error → release →
//! incremental, recipe, record (the run's records: legs, report.json), doctor → emulators, base, pin, published, pull →
//! image, run, retry, trust (what vouches for a release) → placement, registry (a registry's HTTP API) →
//! source (where a published image comes from) → engine, names → matrix, paths, host, text.

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

pub mod retry;

pub mod placement;
pub mod registry;

pub mod engine;
pub mod names;

pub mod matrix;

pub mod host;
pub mod paths;
pub mod text;
