//! The examples print what a reader wants to see (issue 14, item 13): human values, no
//! Rust Debug structs, and each operation's events before the line about its result.

use std::process::Command;

fn run(bin: &str) -> String {
    let out = Command::new(bin).output().expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{bin} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn no_debug_output(text: &str) {
    for debug in ["Some(", "None", " { ", "Duration", "Revision("] {
        assert!(!text.contains(debug), "Debug output {debug:?} in:\n{text}");
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

#[test]
fn memory_demo_prints_readable_lines_and_waits_for_its_last_event() {
    let text = run(env!("CARGO_BIN_EXE_memory-demo"));
    no_debug_output(&text);
    assert!(
        line_of(&text, "remove succeeded") < line_of(&text, "=> removed"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("=> removed"),
        "{text}"
    );
}

#[test]
fn embed_local_prints_human_sizes_and_stopped_after_the_stop_events() {
    let text = run(env!("CARGO_BIN_EXE_embed-local"));
    no_debug_output(&text);
    assert!(text.contains(" MiB, cpu "), "{text}");
    assert!(
        line_of(&text, "stop succeeded") < line_of(&text, "hello-embedded is stopped"),
        "{text}"
    );
    assert!(line_of(&text, "remove succeeded") < line_of(&text, "hello-embedded removed"));
}
