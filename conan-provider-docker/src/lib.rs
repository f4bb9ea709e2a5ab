//! Conan's docker provider (work in progress).
