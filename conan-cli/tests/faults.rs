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

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::procs::{self, InstanceProcess};
use common::{Home, Run, alive, app, kill, unique};

/// The seeds of the 30 kill points of the plain SIGKILL tests.
const SEEDS: [u64; 30] = [
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
const FULL_VOLUME_SEEDS: [u64; 5] = [
    0xf011_0001,
    0xf011_0002,
    0xf011_0003,
    0xf011_0004,
    0xf011_0005,
];
const DAMAGED_STATE_SEEDS: [u64; 5] = [
    0xda3a_0001,
    0xda3a_0002,
    0xda3a_0003,
    0xda3a_0004,
    0xda3a_0005,
];
const FD_LIMIT_SEEDS: [u64; 5] = [
    0xfd11_0001,
    0xfd11_0002,
    0xfd11_0003,
    0xfd11_0004,
    0xfd11_0005,
];

/// Kill delays are drawn from 0..=this many milliseconds.
const MAX_KILL_DELAY_MS: u64 = 2500;
/// How long the sluggish app takes to listen, and to exit after SIGTERM.
const START_DELAY_MS: &str = "START_DELAY_MS=1200";
const STOP_DELAY_MS: &str = "STOP_DELAY_MS=800";
/// Longest a single command of the suite may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);
/// How long recovery may take to settle (no deployment in a transitional status) after a
/// fault.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// How long the process invariants may take to hold once it settled, and processes to
/// appear or go after a command returned.
const PROCESS_DEADLINE: Duration = Duration::from_secs(5);

const TRANSITIONAL: [&str; 5] = ["pending", "deploying", "updating", "stopping", "removing"];

/// An operation interrupted by a kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Deploy,
    Update,
    Stop,
    Rm,
    Restart,
}

const OPS: [Op; 5] = [Op::Deploy, Op::Update, Op::Stop, Op::Rm, Op::Restart];

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Deploy => "deploy",
            Op::Update => "update",
            Op::Stop => "stop",
            Op::Rm => "rm",
            Op::Restart => "restart",
        })
    }
}

/// splitmix64: a seed's delay, the same on every machine.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One kill point: SIGKILL the daemon `delay` after `op` started.
#[derive(Clone, Copy, Debug)]
struct Point {
    seed: u64,
    op: Op,
    delay: Duration,
}

impl Point {
    fn new(seed: u64, op: Op) -> Self {
        let delay = Duration::from_millis(splitmix64(seed) % (MAX_KILL_DELAY_MS + 1));
        Self { seed, op, delay }
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {:#x}: SIGKILL {} ms into `{}`",
            self.seed,
            self.delay.as_millis(),
            self.op
        )
    }
}

/// `seeds` (or `CONAN_FAULTS_SEEDS`) in rounds of five points, one per operation.
fn rounds(seeds: &[u64]) -> Vec<Vec<Point>> {
    let replay: Option<Vec<u64>> = std::env::var("CONAN_FAULTS_SEEDS").ok().map(|list| {
        list.split(',')
            .filter_map(|s| {
                let s = s.trim();
                s.strip_prefix("0x")
                    .map_or_else(|| s.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
            })
            .collect()
    });
    let seeds = replay.as_deref().unwrap_or(seeds);
    seeds
        .chunks(OPS.len())
        .map(|chunk| {
            chunk
                .iter()
                .zip(OPS)
                .map(|(&seed, op)| Point::new(seed, op))
                .collect()
        })
        .collect()
}

/// The violations of one scenario; the test fails at its end when there is any.
struct Report {
    scenario: &'static str,
    started: Instant,
    failures: Mutex<Vec<String>>,
}

impl Report {
    fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            started: Instant::now(),
            failures: Mutex::new(Vec::new()),
        }
    }

    fn fail(&self, what: &str, message: impl fmt::Display) {
        let line = format!("[{}] {what}: {message}", self.scenario);
        eprintln!("INVARIANT VIOLATED {line}");
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    #[track_caller]
    fn finish(self) {
        eprintln!(
            "{}: done in {:.1} s",
            self.scenario,
            self.started.elapsed().as_secs_f64()
        );
        let failures = self
            .failures
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        assert!(
            failures.is_empty(),
            "{} invariant violation(s) in {}:\n{}",
            failures.len(),
            self.scenario,
            failures.join("\n")
        );
    }
}

/// A deployment as `ls --json` lists it.
#[derive(Clone, Debug)]
struct Listed {
    id: String,
    name: String,
    status: String,
    pid: Option<i32>,
    revision: u64,
}

impl Listed {
    fn from_json(v: &Value) -> Self {
        Self {
            id: v["id"].as_str().unwrap_or_default().to_owned(),
            name: v["name"].as_str().unwrap_or_default().to_owned(),
            status: v["status"].as_str().unwrap_or_default().to_owned(),
            pid: v["pid"].as_i64().and_then(|p| i32::try_from(p).ok()),
            revision: v["revision"].as_u64().unwrap_or(0),
        }
    }
}

/// One line of a command's outcome, for messages: its exit code and its error (from the
/// `error:` line of stderr on, else its last lines).
fn outcome(result: &Result<Run, String>) -> String {
    let run = match result {
        Ok(run) if run.code == 0 => return "exit 0".to_owned(),
        Ok(run) => run,
        Err(e) => return e.clone(),
    };
    let lines: Vec<&str> = run.stderr.lines().collect();
    let from = lines
        .iter()
        .position(|l| l.starts_with("error"))
        .unwrap_or(lines.len().saturating_sub(3));
    let text = lines[from..]
        .iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" / ");
    let mut text: String = text.chars().take(600).collect();
    if text.len() == 600 {
        text.push_str("...");
    }
    format!("exit {}: {text}", run.code)
}

/// Everything a command printed, for searching.
fn full_text(result: &Result<Run, String>) -> String {
    match result {
        Ok(run) => format!("{}\n{}", run.stdout, run.stderr),
        Err(e) => e.clone(),
    }
}

/// A deployment set up for a kill point.
struct Target {
    name: String,
    point: Point,
}

/// A scenario's home, its report, and what each deployment name stands for.
struct Suite<'a> {
    home: &'a Home,
    report: &'a Report,
    roles: Mutex<BTreeMap<String, String>>,
    /// Processes already reported as violating an invariant: later checks (operability)
    /// look past them, so one stray is reported once, not by every later step; the final
    /// leftover check still counts them.
    strays: Mutex<HashSet<i32>>,
}

impl<'a> Suite<'a> {
    fn new(home: &'a Home, report: &'a Report) -> Self {
        Self {
            home,
            report,
            roles: Mutex::new(BTreeMap::new()),
            strays: Mutex::new(HashSet::new()),
        }
    }

    fn mark_strays<'p>(&self, procs: impl IntoIterator<Item = &'p InstanceProcess>) {
        self.strays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(procs.into_iter().map(|p| p.pid));
    }

    /// The home's instance processes, without those already reported.
    fn unreported_processes(&self) -> Vec<InstanceProcess> {
        let strays = self
            .strays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        procs::of_home(self.home.path())
            .into_iter()
            .filter(|p| !strays.contains(&p.pid))
            .collect()
    }

    fn conan(&self, args: &[&str]) -> Result<Run, String> {
        self.home.try_conan(args, COMMAND_DEADLINE)
    }

    fn role(&self, name: &str, role: impl Into<String>) {
        self.roles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), role.into());
    }

    /// `name (its role)` for messages.
    fn who(&self, name: &str) -> String {
        let roles = self.roles.lock().unwrap_or_else(|p| p.into_inner());
        match roles.get(name) {
            Some(role) => format!("{name} ({role})"),
            None => name.to_owned(),
        }
    }

    fn fail(&self, name: &str, message: impl fmt::Display) {
        self.report.fail(&self.who(name), message);
    }

    /// `conan deploy` of the sluggish app as `name`, tagged with the home, plus `env`.
    fn deploy(&self, name: &str, env: &[&str]) -> Result<Run, String> {
        let path = app("sluggish");
        let tag = self.home.tag_env();
        let mut args = vec![
            "deploy",
            path.to_str().expect("utf-8 path"),
            "--name",
            name,
            "--health",
            "/health",
            "--json",
            "--env",
            &tag,
        ];
        for e in env {
            args.extend(["--env", e]);
        }
        self.conan(&args)
    }

    /// Deploys `name` as a plain bystander; its id, or `None` (reported) when that failed.
    fn bystander(&self, name: &str, role: &str, env: &[&str]) -> Option<String> {
        self.role(name, role);
        let run = self.deploy(name, env);
        match &run {
            Ok(r) if r.code == 0 => Some(r.json()["id"].as_str().unwrap_or_default().to_owned()),
            _ => {
                self.fail(name, format!("setup deploy failed: {}", outcome(&run)));
                None
            }
        }
    }

    /// Deploys what the points need (all but the `deploy` points' deployments), at once.
    fn prepare(&self, points: &[Point]) -> Vec<Target> {
        let targets: Vec<Target> = points
            .iter()
            .map(|&point| {
                let name = unique(&point.op.to_string());
                self.role(&name, point.to_string());
                Target { name, point }
            })
            .collect();
        std::thread::scope(|s| {
            for t in targets.iter().filter(|t| t.point.op != Op::Deploy) {
                s.spawn(|| {
                    let run = self.deploy(&t.name, &[START_DELAY_MS, STOP_DELAY_MS]);
                    if run.as_ref().map_or(true, |r| r.code != 0) {
                        self.fail(&t.name, format!("setup deploy failed: {}", outcome(&run)));
                    }
                });
            }
        });
        targets
    }

    /// Starts every target's operation so that each has run its point's delay when the
    /// daemon is SIGKILLed; returns once the commands ended (the daemon stays dead).
    fn strike(&self, targets: &[Target]) {
        let Some(daemon) = self.home.daemon_pid().filter(|&p| alive(p)) else {
            self.report
                .fail("daemon", "no live daemon to kill before the round");
            return;
        };
        let latest = targets
            .iter()
            .map(|t| t.point.delay)
            .max()
            .unwrap_or_default();
        let t0 = Instant::now() + Duration::from_millis(50);
        let kill_at = t0 + latest;
        let killed_at: Mutex<Option<Instant>> = Mutex::new(None);
        std::thread::scope(|s| {
            for t in targets {
                let killed_at = &killed_at;
                s.spawn(move || {
                    let start = kill_at - t.point.delay;
                    std::thread::sleep(start.saturating_duration_since(Instant::now()));
                    let started = Instant::now();
                    let seed = format!("CONAN_FAULTS_SEED={:#x}", t.point.seed);
                    let run = match t.point.op {
                        Op::Deploy => self.deploy(&t.name, &[START_DELAY_MS, STOP_DELAY_MS]),
                        Op::Update => self.conan(&["update", &t.name, "--env", &seed, "--json"]),
                        Op::Stop => self.conan(&["stop", &t.name, "--json"]),
                        Op::Rm => self.conan(&["rm", "--force", &t.name, "--json"]),
                        Op::Restart => self.conan(&["restart", &t.name, "--json"]),
                    };
                    let into = killed_at
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .map(|k| {
                            format!("{} ms in", k.saturating_duration_since(started).as_millis())
                        })
                        .unwrap_or_else(|| "before the kill".to_owned());
                    self.role(
                        &t.name,
                        format!("{}; killed {into}; the command: {}", t.point, outcome(&run)),
                    );
                });
            }
            std::thread::sleep(kill_at.saturating_duration_since(Instant::now()));
            kill(daemon, 9);
            *killed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            let gone = Instant::now() + PROCESS_DEADLINE;
            while alive(daemon) && Instant::now() < gone {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    }

    /// Observes the home once: the listing, what violates the invariants (by name), and
    /// the processes that violate them.
    fn observe(&self) -> (Vec<Listed>, Vec<(String, String)>, Vec<InstanceProcess>) {
        let mut violations = Vec::new();
        let mut strays: Vec<InstanceProcess> = Vec::new();
        let list = match self.conan(&["ls", "--json"]) {
            Ok(run) if run.code == 0 => match serde_json::from_str::<Value>(&run.stdout) {
                Ok(Value::Array(items)) => items.iter().map(Listed::from_json).collect(),
                _ => {
                    violations.push(("ls".to_owned(), format!("not a JSON array: {}", run.stdout)));
                    Vec::new()
                }
            },
            other => {
                violations.push((
                    "ls".to_owned(),
                    format!("`conan ls --json` fails: {}", outcome(&other)),
                ));
                return (Vec::new(), violations, strays);
            }
        };
        let all = self.unreported_processes();
        let listed: HashSet<&str> = list.iter().map(|d| d.id.as_str()).collect();
        for d in &list {
            let mine = procs::of_deployment(&all, &d.id);
            let instances = procs::instances(mine.iter().copied());
            let mut bad = |m: String| violations.push((d.name.clone(), m));
            if TRANSITIONAL.contains(&d.status.as_str()) {
                bad(format!(
                    "still {} (processes: {})",
                    d.status,
                    procs::describe(mine.iter().copied())
                ));
                continue;
            }
            if d.status == "running" {
                let serving = mine
                    .iter()
                    .find(|p| Some(p.pid) == d.pid)
                    .map(|p| p.key.clone());
                strays.extend(
                    mine.iter()
                        .filter(|p| serving.as_ref().is_some_and(|k| &p.key != k))
                        .map(|p| (*p).clone()),
                );
                if instances.len() != 1 {
                    bad(format!(
                        "running with {} live instances (want 1): {}",
                        instances.len(),
                        procs::describe(mine.iter().copied())
                    ));
                }
                match d.pid {
                    None => bad("running without a pid".to_owned()),
                    Some(pid) if !alive(pid) => bad(format!("reported pid {pid} is not alive")),
                    Some(pid) if !mine.iter().any(|p| p.pid == pid) => bad(format!(
                        "reported pid {pid} is not a process of its instances ({})",
                        procs::describe(mine.iter().copied())
                    )),
                    Some(_) => {}
                }
                if let Some(status_pid) = self.status_pid(&d.name)
                    && Some(status_pid) != d.pid
                {
                    bad(format!(
                        "`status` reports pid {status_pid}, `ls` {:?}",
                        d.pid
                    ));
                }
            } else if !mine.is_empty() {
                strays.extend(mine.iter().map(|p| (*p).clone()));
                bad(format!(
                    "{} but its processes run: {}",
                    d.status,
                    procs::describe(mine.iter().copied())
                ));
            }
        }
        let unexplained: Vec<&InstanceProcess> = all
            .iter()
            .filter(|p| !listed.contains(p.deployment.as_str()))
            .collect();
        if !unexplained.is_empty() {
            violations.push((
                "unaccounted".to_owned(),
                format!(
                    "processes no listed deployment explains: {}",
                    procs::describe(unexplained.iter().copied())
                ),
            ));
            strays.extend(unexplained.into_iter().cloned());
        }
        (list, violations, strays)
    }

    fn status_pid(&self, name: &str) -> Option<i32> {
        let run = self.conan(&["status", name, "--json"]).ok()?;
        let v: Value = serde_json::from_str(&run.stdout).ok()?;
        v["pid"].as_i64().and_then(|p| i32::try_from(p).ok())
    }

    /// The invariants after a fault (the next command starts a new daemon): polls until
    /// no deployment is in a transitional status (or [`SETTLE_DEADLINE`] passes), then
    /// until the process invariants hold (or [`PROCESS_DEADLINE`] passes), and reports
    /// what still violates them. Returns the listing.
    fn check(&self, stage: &str) -> Vec<Listed> {
        let settle = Instant::now() + SETTLE_DEADLINE;
        // A daemon that cannot start fails every command at once: give it less time.
        let answer = Instant::now() + 2 * PROCESS_DEADLINE;
        let mut grace: Option<Instant> = None;
        let (list, violations, strays) = loop {
            let (list, violations, strays) = self.observe();
            let answered = !violations.iter().any(|(what, _)| what == "ls");
            let settled = answered
                && list
                    .iter()
                    .all(|d| !TRANSITIONAL.contains(&d.status.as_str()));
            let now = Instant::now();
            if settled && grace.is_none() {
                grace = Some(now + PROCESS_DEADLINE);
            }
            if violations.is_empty()
                || now > settle
                || grace.is_some_and(|g| now > g)
                || (!answered && now > answer)
            {
                break (list, violations, strays);
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        for (name, message) in violations {
            self.fail(&name, format!("{stage}: {message}"));
        }
        self.mark_strays(&strays);
        for d in &list {
            if let Ok(run) = self.conan(&["history", &d.name, "--json"])
                && let Ok(Value::Array(revs)) = serde_json::from_str::<Value>(&run.stdout)
            {
                for r in revs.iter().filter(|r| r["state"] == "pending") {
                    self.fail(
                        &d.name,
                        format!(
                            "{stage}: revision {} is still pending after recovery settled",
                            r["revision"]
                        ),
                    );
                }
            }
        }
        list
    }

    /// Waits until `id` has `want` live instances (and, when given, `pid` among their
    /// processes); reports otherwise.
    fn expect_instances(&self, name: &str, id: &str, want: usize, pid: Option<i32>, after: &str) {
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            let all = self.unreported_processes();
            let mine = procs::of_deployment(&all, id);
            let n = procs::instances(mine.iter().copied()).len();
            let pid_ok = pid.is_none_or(|p| mine.iter().any(|m| m.pid == p));
            if n == want && pid_ok && (want > 0 || mine.is_empty()) {
                return;
            }
            if Instant::now() > deadline {
                self.fail(
                    name,
                    format!(
                        "after `{after}`: {n} live instances (want {want}{}): {}",
                        pid.map(|p| format!(", with pid {p}")).unwrap_or_default(),
                        procs::describe(mine.iter().copied())
                    ),
                );
                self.mark_strays(mine);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `stop`, `start`, `update`, `rm --force` on `d`, each checked.
    fn operate(&self, d: &Listed) {
        let name = d.name.as_str();
        let step = |args: &[&str]| -> Option<Value> {
            let run = self.conan(args);
            match &run {
                Ok(r) if r.code == 0 => {
                    Some(serde_json::from_str(&r.stdout).unwrap_or(Value::Null))
                }
                _ => {
                    self.fail(
                        name,
                        format!(
                            "operable: `conan {}` fails: {} (the daemon holds {} fds)",
                            args.join(" "),
                            outcome(&run),
                            self.home.daemon_pid().map(procs::open_fds).unwrap_or(0)
                        ),
                    );
                    None
                }
            }
        };
        let pid_of = |v: &Value| v["pid"].as_i64().and_then(|p| i32::try_from(p).ok());
        let operable = step(&["stop", name, "--json"]).is_some();
        if operable {
            self.expect_instances(name, &d.id, 0, None, "stop");
        }
        if operable && let Some(v) = step(&["start", name, "--json"]) {
            if v["status"] != "running" {
                self.fail(
                    name,
                    format!("operable: `start` answered status {}", v["status"]),
                );
            }
            self.expect_instances(name, &d.id, 1, pid_of(&v), "start");
            if let Some(v) = step(&["update", name, "--env", "CONAN_FAULTS_OPERABLE=1", "--json"]) {
                let before = d.revision;
                if v["revision"].as_u64().unwrap_or(0) <= before {
                    self.fail(
                        name,
                        format!("operable: `update` kept revision {}", v["revision"]),
                    );
                }
                self.expect_instances(name, &d.id, 1, pid_of(&v), "update");
            }
        }
        if step(&["rm", "--force", name, "--json"]).is_some() {
            self.expect_instances(name, &d.id, 0, None, "rm --force");
        }
    }

    /// Operates every listed deployment (concurrently), then checks that nothing of the
    /// home runs any more.
    fn operate_all(&self, list: &[Listed]) {
        self.operate_all_with(list, true);
    }

    /// [`operate_all`](Self::operate_all), one deployment after the other unless
    /// `concurrently`.
    fn operate_all_with(&self, list: &[Listed], concurrently: bool) {
        if concurrently {
            std::thread::scope(|s| {
                for d in list {
                    s.spawn(move || self.operate(d));
                }
            });
        } else {
            for d in list {
                self.operate(d);
            }
        }
        if let Ok(run) = self.conan(&["ls", "--json"])
            && let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&run.stdout)
        {
            for item in items {
                let d = Listed::from_json(&item);
                if list.iter().any(|l| l.id == d.id) {
                    self.fail(
                        &d.name,
                        format!("still listed ({}) after `rm --force` succeeded", d.status),
                    );
                }
            }
        }
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            let listed = self.listed_ids();
            let left: Vec<InstanceProcess> = procs::of_home(self.home.path())
                .into_iter()
                .filter(|p| {
                    list.iter().any(|d| d.id == p.deployment) || !listed.contains(&p.deployment)
                })
                .collect();
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let strays = self
                    .strays
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let (known, new): (Vec<&InstanceProcess>, Vec<&InstanceProcess>) =
                    left.iter().partition(|p| strays.contains(&p.pid));
                self.report.fail(
                    "leftovers",
                    format!(
                        "processes left after every deployment was removed: {} (and, reported above: {})",
                        procs::describe(new),
                        procs::describe(known)
                    ),
                );
                for p in &left {
                    kill(p.pid, 9);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The ids `ls` lists now (empty when it fails).
    fn listed_ids(&self) -> HashSet<String> {
        self.conan(&["ls", "--json"])
            .ok()
            .and_then(|r| serde_json::from_str::<Value>(&r.stdout).ok())
            .and_then(|v| v.as_array().cloned())
            .map(|items| items.iter().map(|i| Listed::from_json(i).id).collect())
            .unwrap_or_default()
    }

    /// SIGKILLs the app of `name` (as a crash would) and expects the supervisor to start a
    /// new one.
    fn expect_supervised(&self, name: &str, stage: &str) {
        let Some(d) = self.listed(name).filter(|d| d.status == "running") else {
            return;
        };
        let Some(pid) = d.pid else { return };
        kill(pid, 9);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(now) = self.listed(name)
                && now.status == "running"
                && let Some(new) = now.pid
                && new != pid
                && alive(new)
            {
                return;
            }
            if Instant::now() > deadline {
                let now = self.listed(name);
                self.fail(
                    name,
                    format!(
                        "{stage}: its app (pid {pid}) was killed and never restarted; now {:?} pid {:?}",
                        now.as_ref().map(|d| d.status.clone()),
                        now.and_then(|d| d.pid)
                    ),
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn listed(&self, name: &str) -> Option<Listed> {
        let run = self.conan(&["ls", "--json"]).ok()?;
        let v: Value = serde_json::from_str(&run.stdout).ok()?;
        v.as_array()?
            .iter()
            .map(Listed::from_json)
            .find(|d| d.name == name)
    }

    /// The local provider's `state.json` of deployment `id`.
    fn state_file(&self, id: &str) -> std::path::PathBuf {
        self.home
            .path()
            .join("local/deployments")
            .join(id)
            .join("state.json")
    }
}

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
    // Make room for the round's setup, then fill up again while it runs.
    let room: Vec<String> = fillers.drain(..fillers.len().min(4)).collect();
    for name in &room {
        let _ = suite.conan(&["rm", "--force", name]);
    }
    for points in rounds(&FD_LIMIT_SEEDS) {
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
        suite.operate_all(&rest);
    }
    if let Some((name, ..)) = refused {
        let _ = suite.conan(&["rm", "--force", &name]);
    }
    report.finish();
}
