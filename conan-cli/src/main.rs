//! The `conan` command; see the `conan_cli` crate docs.

fn main() -> std::process::ExitCode {
    conan_cli::main()
}
