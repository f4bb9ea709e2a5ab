//! `conan daemon status` says how local instances are contained (issue 10, finding 7):
//! a cgroup per instance where the machine allows it, else process markers, and which
//! resource limits are enforced.

mod common;

use common::Home;

/// The value of the `containment` row of `conan daemon status`.
fn containment_row(home: &Home) -> String {
    let text = home.conan(&["daemon", "status"]).ok().stdout;
    text.lines()
        .find_map(|l| l.strip_prefix("containment  "))
        .unwrap_or_else(|| panic!("no containment line in:\n{text}"))
        .to_owned()
}

#[test]
fn daemon_status_shows_the_containment_in_force() {
    let home = Home::new();
    home.conan(&["ls"]).ok();
    let row = containment_row(&home);
    let json = home.conan(&["daemon", "status", "--json"]).ok().json();
    assert_eq!(json["containment"].as_str(), Some(row.as_str()));
    if row.starts_with("cgroup v") {
        assert!(
            row.contains("/conan") && row.contains("memory limit: ") && row.contains("cpu limit: "),
            "{row}"
        );
    } else {
        // Where no cgroup can be made, the reason is given.
        assert!(row.starts_with("process markers (no cgroup: "), "{row}");
    }
}

#[test]
fn cgroups_can_be_turned_off_and_status_says_so() {
    let home = Home::new().with_env("CONAN_LOCAL_CGROUPS", "off");
    home.conan(&["ls"]).ok();
    assert_eq!(
        containment_row(&home),
        "process markers (no cgroup: disabled by configuration)"
    );
}
