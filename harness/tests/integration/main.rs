//! The integration tests, one binary: real engine, real Guix. One module per
//! area; one shared harness (each image prepared once) and one lock.
//!   cargo test --test integration                          everything
//!   cargo test --test integration -- scenarios::leg::case_3_arm_v7   one platform's checks

mod amd64;
mod base_age;
mod cli;
mod common;

mod engine_faults;
mod engines;
mod examples;
mod failure_modes;
mod incremental;

mod platforms;
mod pull_stage;
mod rebuild;
mod release;
mod scenarios;
mod session;
mod shared_engine;
mod trust;
