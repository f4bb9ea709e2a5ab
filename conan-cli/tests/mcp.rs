//! `conan mcp` driven as a subprocess by MCP clients the project did not write: the
//! official Python SDK (`tests/mcp/python_client.py`). They
//! initialize, list the seven tools with their schemas, deploy the hello app, monitor it,
//! read its logs, update, stop, list and remove it; a crashing app answers `isError` with
//! its failure bundle; bad inputs answer clear tool errors and deploy nothing; no env value
//! appears in any answer or in the daemon's log; the audit log names the MCP client.

mod common;

use std::process::Command;

use common::*;

/// A value no output may contain.
const SECRET: &str = "s3cr3t-MCP-token-9f2c";

/// Whether the official MCP Python SDK is importable; under CI a missing SDK fails the
/// test (`.ci/pip-need.sh` installs it), elsewhere it is skipped with a note.
fn python_sdk() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import mcp"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "the MCP Python SDK is missing: run .ci/pip-need.sh (pip install mcp)"
        );
        eprintln!("skipped: the MCP Python SDK is not installed (pip install mcp)");
    }
    ok
}

#[test]
fn the_official_python_sdk_drives_every_tool_and_no_env_value_leaks() {
    if !python_sdk() {
        return;
    }
    let home = Home::new();
    let out = home.path().join("answers.jsonl");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/python_client.py");
    let mut python = Command::new("python3");
    python.envs(home.envs().iter().map(|(k, v)| (k, v)));
    let output = python
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_conan"))
        .arg(app("hello"))
        .arg(app("crash"))
        .arg(SECRET)
        .arg(&out)
        .env("CONAN_HOME", home.path())
        .env("NO_COLOR", "1")
        .env_remove("XDG_STATE_HOME")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python client failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- daemon log\n{}",
        home.daemon_log()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    let answers = std::fs::read_to_string(&out).expect("the answers file");
    assert!(answers.lines().count() >= 14, "{answers}");
    assert!(answers.contains("API_TOKEN"), "the env name is listed");
    for (what, text) in [
        ("an answer", answers.as_str()),
        ("the daemon's log", home.daemon_log().as_str()),
        ("the server's stderr", &*stderr),
    ] {
        assert!(
            !text.contains(SECRET),
            "the env value appears in {what}:\n{text}"
        );
    }
    // The audit log names the MCP client for each operation.
    let events = home.conan(&["events"]).ok().stdout;
    for op in ["deploy", "update", "stop", "remove"] {
        assert!(
            events
                .lines()
                .any(|l| l.contains(op) && l.contains("(by mcp:python-sdk-test 2.0)")),
            "no audit entry of {op} by the MCP client:\n{events}"
        );
    }
    assert!(!events.contains(SECRET));
}

