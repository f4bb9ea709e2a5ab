//! Runnable example programs (`src/bin/`) and sample Node.js apps (`apps/`).
//!
//! - `cargo run -p conan-examples --bin memory-demo`: the manager on the in-memory provider.
//! - `cargo run -p conan-examples --bin embed-local`: embed Conan in a Rust program and run
//!   the hello app as a supervised local process.
