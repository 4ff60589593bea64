//! The integration tests, linked into one binary (`autotests = false` in Cargo.toml).
//!
//! One binary instead of one per file: each test binary links the whole library (release, thin LTO), and
//! on CI's 2 cores those links took most of the test build. Run one file's tests with a filter on its
//! module, e.g. `cargo test --release --test integration backends::`. `alloc_limits` stays a binary of its
//! own: it installs a counting global allocator, which would count every other test's allocations too.

mod common;

mod backends;
mod bad_input;
mod bank_formats;
mod banks;
mod bench_cli;
mod cli;
mod data_model;
mod deploy;
mod exactness;
mod fleet;
mod formats;
mod golden;
mod http_api;
mod layers;
mod matcher;
mod python_client;
mod resilience;
mod server;
mod shaders;
mod store;
mod trust;
