//! Issue 10, finding 4, end to end: a damaged `conan.db` never turns into a silent empty
//! start, one bad row never stops the daemon, and `conan daemon repair` rebuilds what it
//! can (and is safe to run twice). The real binary, a real daemon, real Node processes.

mod common;

use std::time::Duration;

use common::{Home, alive, unique, wait_until};

fn pid_of(view: &serde_json::Value) -> i32 {
    view["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or_else(|| panic!("no pid in {view}"))
}

fn tamper(home: &Home, sql: &str) {
    let conn = rusqlite::Connection::open(home.path().join("conan.db")).expect("open conan.db");
    conn.execute_batch(sql).expect("damage conan.db");
}

/// Before: the daemon refused to start ("cannot load the deployments: ... stored status is
/// not valid"), and nothing offered a way forward.
#[test]
fn one_bad_row_is_flagged_the_rest_is_managed_and_repair_brings_it_back() {
    let home = Home::new();
    let good = unique("good");
    let bad = unique("bad");
    home.deploy_hello(&good);
    let bad_pid = pid_of(&home.deploy_hello(&bad));
    home.conan(&["daemon", "stop"]).ok();
    tamper(
        &home,
        &format!("UPDATE deployments SET status = '{{\"state\": \"runn' WHERE name = '{bad}'"),
    );

    // The daemon starts and manages the good one; the bad one is listed as damaged.
    let good_view = home.listed(&good).expect("the good deployment is managed");
    assert_eq!(good_view["status"], "running", "{good_view}");
    assert!(home.listed(&bad).is_none());
    let status = home.conan(&["daemon", "status"]).ok();
    assert!(
        status.stdout.contains("damaged") && status.stdout.contains(&format!("({bad})")),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("conan daemon repair"),
        "{}",
        status.stdout
    );
    let info = home.conan(&["daemon", "status", "--json"]).ok().json();
    assert_eq!(info["state"]["damaged"][0]["name"], bad.as_str(), "{info}");
    assert!(
        home.daemon_log().contains("cannot be read"),
        "the daemon log says so: {}",
        home.daemon_log()
    );

    // Repair stops the daemon, salvages the row, and the next daemon adopts the app.
    let repair = home.conan(&["daemon", "repair"]).ok();
    assert!(
        repair.stdout.contains("stopped the Conan daemon"),
        "{}",
        repair.stdout
    );
    assert!(
        repair.stdout.contains("salvaged") && repair.stdout.contains(&format!("({bad})")),
        "{}",
        repair.stdout
    );
    assert!(alive(bad_pid), "repair never touches a running app");
    let adopted = home.listed(&bad).expect("back under management");
    assert_eq!(
        pid_of(&adopted),
        bad_pid,
        "the same process, adopted: {adopted}"
    );
    wait_until(
        "the salvaged app to be running",
        Duration::from_secs(20),
        || home.listed(&bad).is_some_and(|v| v["status"] == "running"),
    );

    // A second repair finds nothing to do.
    let again = home.conan(&["daemon", "repair", "--json"]).ok().json();
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(
        again["salvaged"].as_array().map(Vec::len),
        Some(0),
        "{again}"
    );
    assert!(home.listed(&good).is_some() && home.listed(&bad).is_some());
}

/// Before: a truncated `conan.db` made the daemon start empty with no warning while the
/// apps ran unmanaged (deploying again duplicated them).
#[test]
fn a_truncated_database_is_restored_from_its_backup_and_the_daemon_says_so() {
    let home = Home::new();
    let name = unique("trunc");
    let pid = pid_of(&home.deploy_hello(&name));
    // A clean stop writes the backup of the last state.
    home.conan(&["daemon", "stop"]).ok();
    let backup = home.path().join("conan.db.bak");
    assert!(backup.exists(), "no backup after a clean stop");
    let db = home.path().join("conan.db");
    let len = std::fs::metadata(&db).expect("conan.db").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncate conan.db");

    let view = home.listed(&name).expect("not a silent empty start");
    assert_eq!(
        pid_of(&view),
        pid,
        "the running app is adopted, not forgotten"
    );
    assert_eq!(view["status"], "running", "{view}");
    let status = home.conan(&["daemon", "status"]).ok();
    assert!(
        status.stdout.contains("DAMAGED") && status.stdout.contains("restored from the backup"),
        "{}",
        status.stdout
    );
    assert!(
        home.daemon_log().contains("restored from the backup"),
        "{}",
        home.daemon_log()
    );
    let kept = std::fs::read_dir(home.path())
        .expect("home")
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("conan.db.damaged-")
        });
    assert!(kept, "the damaged file is kept");
}

/// Before: a deployment the database lost kept running unmanaged, and nothing could bring
/// it back. `conan daemon repair` re-creates its record from the local provider's state
/// directory, and the next daemon adopts the very process.
#[test]
fn repair_recreates_a_deployment_the_database_lost_from_what_still_runs() {
    let home = Home::new();
    let kept = unique("kept");
    let lost = unique("lost");
    home.deploy_hello(&kept);
    let view = home.deploy_hello(&lost);
    let lost_pid = pid_of(&view);
    let lost_id = view["id"].as_str().expect("id").to_owned();
    home.conan(&["daemon", "stop"]).ok();
    tamper(
        &home,
        &format!(
            "DELETE FROM revisions WHERE deployment = '{lost_id}';
             DELETE FROM deployments WHERE id = '{lost_id}';"
        ),
    );

    let repair = home.conan(&["daemon", "repair", "--json"]).ok().json();
    assert_eq!(repair["changed"], true, "{repair}");
    assert_eq!(repair["recreated"][0]["id"], lost_id.as_str(), "{repair}");
    assert_eq!(repair["recreated"][0]["name"], lost.as_str(), "{repair}");
    assert_eq!(repair["recreated"][0]["status"], "running", "{repair}");

    let adopted = home.listed(&lost).expect("managed again");
    assert_eq!(adopted["id"], lost_id.as_str());
    assert_eq!(
        pid_of(&adopted),
        lost_pid,
        "the same process, adopted: {adopted}"
    );
    assert_eq!(adopted["status"], "running", "{adopted}");
    assert!(home.listed(&kept).is_some());

    let again = home.conan(&["daemon", "repair"]).ok();
    assert!(
        again.stdout.contains("nothing to repair"),
        "{}",
        again.stdout
    );
    assert_eq!(home.listed(&lost).map(|v| pid_of(&v)), Some(lost_pid));
    // And it is operable: stop ends the adopted process.
    home.conan(&["stop", &lost]).ok();
    wait_until("the adopted app to stop", Duration::from_secs(15), || {
        !alive(lost_pid)
    });
}
