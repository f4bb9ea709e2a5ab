//! Fault injection against the real `conan` binary, a real daemon and real Node processes
//! (issue 10's acceptance suite).
//!
//! Each kill point SIGKILLs the daemon a seeded delay (0–2.5 s) after a `deploy`, `update`,
//! `stop`, `rm` or `restart` started, on an app that is slow at both ends
//! (`examples/apps/sluggish`: it listens after 1.2 s and exits 0.8 s after SIGTERM, with a
//! child process), so that the kill lands inside the operation. Five points (one per
//! operation, each on its own deployment) share one kill: their commands start staggered so
//! that each has run its own delay when the daemon dies; each round has a home (and daemon)
//! of its own, and a test's rounds run at once. The next command starts a new daemon, and
//! then — every time — the invariants are checked (see [`Suite::check`]):
//!
//! - no deployment stays in a transitional status (pending, deploying, updating, stopping,
//!   removing) once recovery settles;
//! - a running deployment has exactly one live instance (by the `CONAN_INSTANCE` marker in
//!   `/proc/*/environ`), and the pid `ls` and `status` report is alive and one of its
//!   processes; a stopped or failed one has none;
//! - no process of the home's apps is left that no listed deployment explains;
//! - no revision in `history` stays pending;
//! - every deployment is operable: `stop`, `start`, `update`, `rm --force` each succeed and
//!   leave the expected processes (none after `rm`, and none of the home at the end).
//!
//! The same checks run with the home on a full 4 MiB tmpfs (root only; skipped with a notice
//! otherwise), with a truncated `state.json`, with a truncated `conan.db`, and with the daemon
//! at its fd limit. A violation does not stop the scenario: all of them are collected, each
//! printed with its kill point (seed, operation, delay, what the command answered), and the
//! test fails at its end with the list.
//!
//! The seeds are fixed (deterministic CI); `CONAN_FAULTS_SEEDS=0x1f,7,...` replays others
//! (in rounds of five, operations in the order deploy, update, stop, rm, restart).

#[path = "../common/mod.rs"]
mod common;
mod points;
mod report;
mod suite;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::procs::{self, InstanceProcess};
use common::{Home, Run, alive, app, kill, unique};
use points::*;
use report::*;
use suite::*;

/// The seeds of the 30 kill points of the plain SIGKILL tests.
pub(crate) const SEEDS: [u64; 30] = [
    0x5eed_0001,
    0x5eed_0002,
    0x5eed_0003,
    0x5eed_0004,
    0x5eed_0005,
    0x5eed_0006,
    0x5eed_0007,
    0x5eed_0008,
    0x5eed_0009,
    0x5eed_000a,
    0x5eed_000b,
    0x5eed_000c,
    0x5eed_000d,
    0x5eed_000e,
    0x5eed_000f,
    0x5eed_0010,
    0x5eed_0011,
    0x5eed_0012,
    0x5eed_0013,
    0x5eed_0014,
    0x5eed_0015,
    0x5eed_0016,
    0x5eed_0017,
    0x5eed_0018,
    0x5eed_0019,
    0x5eed_001a,
    0x5eed_001b,
    0x5eed_001c,
    0x5eed_001d,
    0x5eed_001e,
];

/// The seeds of the kill points of the other fault scenarios (one round each).
pub(crate) const FULL_VOLUME_SEEDS: [u64; 5] = [
    0xf011_0001,
    0xf011_0002,
    0xf011_0003,
    0xf011_0004,
    0xf011_0005,
];
pub(crate) const DAMAGED_STATE_SEEDS: [u64; 5] = [
    0xda3a_0001,
    0xda3a_0002,
    0xda3a_0003,
    0xda3a_0004,
    0xda3a_0005,
];
pub(crate) const FD_LIMIT_SEEDS: [u64; 5] = [
    0xfd11_0001,
    0xfd11_0002,
    0xfd11_0003,
    0xfd11_0004,
    0xfd11_0005,
];

/// Kill delays are drawn from 0..=this many milliseconds.
pub(crate) const MAX_KILL_DELAY_MS: u64 = 2500;
/// How long the sluggish app takes to listen, and to exit after SIGTERM.
pub(crate) const START_DELAY_MS: &str = "START_DELAY_MS=1200";
pub(crate) const STOP_DELAY_MS: &str = "STOP_DELAY_MS=800";
/// Longest a single command of the suite may take.
pub(crate) const COMMAND_DEADLINE: Duration = Duration::from_secs(30);
/// How long recovery may take to settle (no deployment in a transitional status) after a
/// fault.
pub(crate) const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// How long the process invariants may take to hold once it settled, and processes to
/// appear or go after a command returned.
pub(crate) const PROCESS_DEADLINE: Duration = Duration::from_secs(5);

pub(crate) const TRANSITIONAL: [&str; 5] =
    ["pending", "deploying", "updating", "stopping", "removing"];

/// Truncates `path` to half its length; reports when it is not there.
fn truncate_half(report: &Report, path: &std::path::Path) {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let file = std::fs::OpenOptions::new().write(true).open(path);
            if let Err(e) = file.and_then(|f| f.set_len(meta.len() / 2)) {
                report.fail("setup", format!("cannot truncate {}: {e}", path.display()));
            }
        }
        Err(e) => report.fail("setup", format!("no {} to damage: {e}", path.display())),
    }
}

/// One kill round after another on one home: prepare, strike, check, operate.
/// Kill rounds, each in a home of its own, all at once (most of a round is waiting for
/// the sluggish app).
fn kill_rounds(scenario: &'static str, seeds: &[u64]) {
    let report = Report::new(scenario);
    std::thread::scope(|s| {
        for points in rounds(seeds) {
            let report = &report;
            s.spawn(move || {
                let home = Home::with_ports(20);
                let suite = Suite::new(&home, report);
                let targets = suite.prepare(&points);
                suite.strike(&targets);
                let list = suite.check("after the kill");
                // The new daemon supervises what it adopted: a crash is restarted.
                if let Some(t) = targets.iter().find(|t| t.point.op == Op::Update) {
                    suite.expect_supervised(&t.name, "after the kill");
                }
                suite.operate_all(&list);
            });
        }
    });
    report.finish();
}

#[test]
fn sigkill_during_operations_points_1_to_10() {
    kill_rounds("sigkill 1-10", &SEEDS[..10]);
}

#[test]
fn sigkill_during_operations_points_11_to_20() {
    kill_rounds("sigkill 11-20", &SEEDS[10..20]);
}

#[test]
fn sigkill_during_operations_points_21_to_30() {
    kill_rounds("sigkill 21-30", &SEEDS[20..]);
}

/// The home on a 4 MiB tmpfs that a chatty app and a filler file fill up: the kill points
/// run on the full volume, the invariants are checked while it is full (except that
/// operations may fail), then again once space is freed, and then every deployment must be
/// operable.
#[test]
fn sigkill_with_a_full_log_volume() {
    let home = match Home::on_tmpfs(4 << 20) {
        Ok(home) => home,
        Err(why) => {
            eprintln!("skipped sigkill_with_a_full_log_volume: {why}");
            return;
        }
    };
    let report = Report::new("full log volume");
    let suite = Suite::new(&home, &report);
    let chatty = unique("chatty");
    suite.bystander(
        &chatty,
        "chatty bystander",
        &["CHATTY_MS=2", "START_DELAY_MS=0", "CHILD=0"],
    );
    let chatty_pid = suite.listed(&chatty).and_then(|d| d.pid);
    for points in rounds(&FULL_VOLUME_SEEDS) {
        let targets = suite.prepare(&points);
        let filler = home.path().join("filler");
        fill(&filler);
        suite.strike(&targets);
        suite.check("with the volume full");
        if let Some(pid) = chatty_pid
            && !alive(pid)
        {
            suite.fail(
                &chatty,
                format!("its app (pid {pid}) died while the log volume was full"),
            );
        }
        // The chatty app would fill the volume again: it goes first (on the full volume).
        match suite.conan(&["rm", "--force", &chatty]) {
            Ok(r) if r.code == 0 => {}
            other => suite.fail(
                &chatty,
                format!("`rm --force` on the full volume fails: {}", outcome(&other)),
            ),
        }
        if let Err(e) = std::fs::remove_file(&filler) {
            report.fail("setup", format!("cannot remove the filler: {e}"));
        }
        let list = suite.check("after space was freed");
        suite.operate_all(&list);
    }
    report.finish();
}

/// Writes `path` until the file system is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let Ok(mut file) = std::fs::File::create(path) else {
        return;
    };
    let chunk = vec![0x5au8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    let small = [0x5au8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
}

/// A kill round, then one bystander's `state.json` truncated before the next daemon
/// starts: the rest must be managed (a killed app restarted), the damaged one managed or
/// flagged with nothing of it left running unmanaged.
#[test]
fn sigkill_with_a_damaged_state_file() {
    let home = Home::with_ports(20);
    let report = Report::new("damaged state file");
    let suite = Suite::new(&home, &report);
    let damaged = unique("damaged");
    let healthy = unique("supervised");
    let damaged_id = suite.bystander(&damaged, "bystander whose state.json is truncated", &[]);
    suite.bystander(&healthy, "bystander", &[]);
    for points in rounds(&DAMAGED_STATE_SEEDS) {
        let targets = suite.prepare(&points);
        suite.strike(&targets);
        if let Some(id) = &damaged_id {
            truncate_half(&report, &suite.state_file(id));
        }
        let list = suite.check("after the kill and the damage");
        suite.expect_supervised(&healthy, "after the damage");
        suite.expect_supervised(&damaged, "after the damage");
        suite.check("after the supervision check");
        suite.operate_all(&list);
    }
    report.finish();
}

/// `conan.db` truncated to half while the daemon is stopped: the next daemon must still
/// account for every app it ran (adopt, rebuild or flag — never run them unmanaged), and a
/// deploy of the same name must not start a duplicate.
#[test]
fn a_truncated_database() {
    let home = Home::with_ports(20);
    let report = Report::new("truncated database");
    let suite = Suite::new(&home, &report);
    let names: Vec<String> = (0..3).map(|_| unique("db")).collect();
    let ids: Vec<Option<String>> = names
        .iter()
        .map(|name| suite.bystander(name, "running before the truncation", &[]))
        .collect();
    let stopped = unique("db-stopped");
    suite.bystander(&stopped, "stopped before the truncation", &[]);
    match suite.conan(&["stop", &stopped]) {
        Ok(run) if run.code == 0 => {}
        other => report.fail("setup", format!("`conan stop`: {}", outcome(&other))),
    }
    match suite.conan(&["daemon", "stop"]) {
        Ok(run) if run.code == 0 => {}
        other => report.fail("setup", format!("`conan daemon stop`: {}", outcome(&other))),
    }
    let db = home.path().join("conan.db");
    truncate_half(&report, &db);
    for extra in ["conan.db-wal", "conan.db-shm"] {
        let _ = std::fs::remove_file(home.path().join(extra));
    }
    let list = suite.check("after the truncation");
    let listed: HashSet<&str> = list.iter().map(|d| d.name.as_str()).collect();
    for name in names.iter().chain([&stopped]) {
        if !listed.contains(name.as_str()) {
            suite.fail(name, "after the truncation: no longer listed");
        }
    }
    // Deploying a name again must replace, not duplicate, what runs under it.
    let again = &names[0];
    let run = suite.deploy(again, &[]);
    // Refusing the name is right when the deployment was kept.
    let kept = listed.contains(again.as_str());
    if run.as_ref().map_or(true, |r| r.code != 0)
        && !(kept && full_text(&run).contains("already exists"))
    {
        suite.fail(
            again,
            format!("deploying it again fails: {}", outcome(&run)),
        );
    }
    let list = suite.check("after deploying a name again");
    if let (Some(old), Some(now)) = (&ids[0], list.iter().find(|d| &d.name == again))
        && &now.id != old
    {
        let all = procs::of_home(home.path());
        let before = procs::of_deployment(&all, old);
        if !before.is_empty() {
            suite.fail(
                again,
                format!(
                    "deployed again as {} while its first app still runs: {}",
                    now.id,
                    procs::describe(before)
                ),
            );
        }
    }
    suite.expect_supervised(&names[1], "after the truncation");
    suite.operate_all(&list);
    report.finish();
}

/// The daemon (and each one the CLI starts) under `ulimit -n 64`, filled with deployments
/// until one is refused: that refusal must name the OS error; then a kill round at the
/// limit, the invariants with the same limit, the fillers removed (at the limit), and every
/// other deployment operable.
#[test]
fn sigkill_at_the_fd_limit() {
    let home = Home::with_ports(40).with_nofile(64);
    let report = Report::new("fd limit");
    let suite = Suite::new(&home, &report);
    let quick = ["START_DELAY_MS=0", "CHILD=0"];
    let mut fillers = Vec::new();
    let mut refused = None;
    for _ in 0..30 {
        let name = unique("filler");
        suite.role(&name, "filler up to the fd limit");
        let run = suite.deploy(&name, &quick);
        match &run {
            Ok(r) if r.code == 0 => fillers.push(name),
            other => {
                refused = Some((name, outcome(other), full_text(other)));
                break;
            }
        }
    }
    match &refused {
        None => report.fail(
            "setup",
            "30 deployments fit under ulimit -n 64: the limit was never reached",
        ),
        Some((name, why, text)) => {
            let fds = home.daemon_pid().map(procs::open_fds).unwrap_or(0);
            eprintln!(
                "fd limit reached after {} deployments (the daemon holds {fds} fds): {why}",
                fillers.len()
            );
            if !text.contains("Too many open files") && !text.contains("os error 24") {
                suite.fail(
                    name,
                    format!("a deploy refused at the fd limit does not say why: {why}"),
                );
            }
        }
    }
    for points in rounds(&FD_LIMIT_SEEDS) {
        // Make room for the round: each of its deployments takes a filler's place (so the
        // daemon is about as near its limit again once they run), and one more for what
        // the concurrent setup deploys hold while they start.
        let room = fillers.len().min(points.len() + 1);
        for name in fillers.drain(..room) {
            let _ = suite.conan(&["rm", "--force", &name]);
        }
        let targets = suite.prepare(&points);
        suite.strike(&targets);
        let list = suite.check("after the kill, at the fd limit");
        for name in &fillers {
            match suite.conan(&["rm", "--force", name]) {
                Ok(r) if r.code == 0 => {}
                other => suite.fail(
                    name,
                    format!("`rm --force` at the fd limit fails: {}", outcome(&other)),
                ),
            }
        }
        let fds = home.daemon_pid().map(procs::open_fds).unwrap_or(0);
        eprintln!("fd limit: the daemon holds {fds} fds with the fillers removed");
        let rest: Vec<Listed> = list
            .into_iter()
            .filter(|d| !fillers.contains(&d.name))
            .collect();
        // One at a time: under 64 descriptors, five blue-green updates at once need more
        // than the daemon has (each holds two instances' spools, log file, pidfd and port
        // lock while it runs); the point is that each works once the pressure is gone.
        suite.operate_all_with(&rest, false);
    }
    if let Some((name, ..)) = refused {
        let _ = suite.conan(&["rm", "--force", &name]);
    }
    report.finish();
}
