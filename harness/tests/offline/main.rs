//! The engine-free tier: every test here runs without a Docker engine (the
//! docs, the workflows, the CLI's parsing and help, the matrix file's
//! errors, and the order of the house's floors). `cargo test` runs it with
//! the engine tier (`tests/integration`); alone, on a machine with no engine:
//!   cargo test -p harness --lib --test offline

mod common;
mod docs;
mod floors;
mod help;
mod no_panic;
mod platform_names;
mod workflows;
