//! Conan's local provider (work in progress).
