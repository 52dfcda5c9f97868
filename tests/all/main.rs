//! Every integration test, in one binary: each file here is a module, as in ripgrep.
//! One binary links the harness and the runtime's library once instead of once per
//! file, and lets the tests of different files share the two cores (`cargo test`
//! runs test binaries one after the other); run one file's tests with
//! `cargo test --test all <file>::`.

// Tests and tools are exempt from Cargo.toml's habits for src/: a failed unwrap is a
// failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod calibrate;
mod concurrency;
mod dashboard;
mod dataplane;
mod deploy;
mod drivers;
mod faults;
mod gateway;
mod hostile;
mod lifecycle;
mod market;
mod metrics;
mod nginx;
mod package;
mod setup;
mod shared;
mod top;
mod upstream;
