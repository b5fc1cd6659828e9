//! guix-matrix harness: builds the Guix image on every platform of matrix.toml
//! through the Docker engine and checks what the image promises.
//!
//! The modules follow the pipeline, each using only those listed after it:
//! cli → release → leg → report → scenarios → harness → error → incremental
//! → doctor, emulators, image, base, pin, published → run, retry → engine,
//! matrix, paths, host, text.

pub mod cli;
pub mod leg;
pub mod release;
pub mod report;
pub mod scenarios;

pub mod harness;

pub mod error;

pub mod incremental;

pub mod base;
pub mod doctor;
pub mod emulators;
pub mod image;
pub mod pin;
pub mod published;

pub mod retry;
pub mod run;

pub mod engine;
pub mod matrix;

pub mod host;
pub mod paths;
pub mod text;
