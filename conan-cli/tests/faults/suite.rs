//! A scenario's homes, deployments and the invariants checked after each fault.

use super::*;

/// A deployment set up for a kill point.
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) point: Point,
}

/// A scenario's home, its report, and what each deployment name stands for.
pub(crate) struct Suite<'a> {
    pub(crate) home: &'a Home,
    pub(crate) report: &'a Report,
    pub(crate) roles: Mutex<BTreeMap<String, String>>,
    /// Processes already reported as violating an invariant: later checks (operability)
    /// look past them, so one stray is reported once, not by every later step; the final
    /// leftover check still counts them.
    pub(crate) strays: Mutex<HashSet<i32>>,
}

impl<'a> Suite<'a> {
    pub(crate) fn new(home: &'a Home, report: &'a Report) -> Self {
        Self {
            home,
            report,
            roles: Mutex::new(BTreeMap::new()),
            strays: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn mark_strays<'p>(&self, procs: impl IntoIterator<Item = &'p InstanceProcess>) {
        self.strays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(procs.into_iter().map(|p| p.pid));
    }

    /// The home's instance processes, without those already reported.
    pub(crate) fn unreported_processes(&self) -> Vec<InstanceProcess> {
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

    pub(crate) fn conan(&self, args: &[&str]) -> Result<Run, String> {
        self.home.try_conan(args, COMMAND_DEADLINE)
    }

    pub(crate) fn role(&self, name: &str, role: impl Into<String>) {
        self.roles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), role.into());
    }

    /// `name (its role)` for messages.
    pub(crate) fn who(&self, name: &str) -> String {
        let roles = self.roles.lock().unwrap_or_else(|p| p.into_inner());
        match roles.get(name) {
            Some(role) => format!("{name} ({role})"),
            None => name.to_owned(),
        }
    }

    pub(crate) fn fail(&self, name: &str, message: impl fmt::Display) {
        self.report.fail(&self.who(name), message);
    }

    /// `conan deploy` of the sluggish app as `name`, tagged with the home, plus `env`.
    pub(crate) fn deploy(&self, name: &str, env: &[&str]) -> Result<Run, String> {
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
    pub(crate) fn bystander(&self, name: &str, role: &str, env: &[&str]) -> Option<String> {
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
    pub(crate) fn prepare(&self, points: &[Point]) -> Vec<Target> {
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
    pub(crate) fn strike(&self, targets: &[Target]) {
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
    pub(crate) fn observe(&self) -> (Vec<Listed>, Vec<(String, String)>, Vec<InstanceProcess>) {
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

    pub(crate) fn status_pid(&self, name: &str) -> Option<i32> {
        let run = self.conan(&["status", name, "--json"]).ok()?;
        let v: Value = serde_json::from_str(&run.stdout).ok()?;
        v["pid"].as_i64().and_then(|p| i32::try_from(p).ok())
    }

    /// The invariants after a fault (the next command starts a new daemon): polls until
    /// no deployment is in a transitional status (or [`SETTLE_DEADLINE`] passes), then
    /// until the process invariants hold (or [`PROCESS_DEADLINE`] passes), and reports
    /// what still violates them. Returns the listing.
    pub(crate) fn check(&self, stage: &str) -> Vec<Listed> {
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
    pub(crate) fn expect_instances(
        &self,
        name: &str,
        id: &str,
        want: usize,
        pid: Option<i32>,
        after: &str,
    ) {
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
    pub(crate) fn operate(&self, d: &Listed) {
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
    pub(crate) fn operate_all(&self, list: &[Listed]) {
        self.operate_all_with(list, true);
    }

    /// [`operate_all`](Self::operate_all), one deployment after the other unless
    /// `concurrently`.
    pub(crate) fn operate_all_with(&self, list: &[Listed], concurrently: bool) {
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
    pub(crate) fn listed_ids(&self) -> HashSet<String> {
        self.conan(&["ls", "--json"])
            .ok()
            .and_then(|r| serde_json::from_str::<Value>(&r.stdout).ok())
            .and_then(|v| v.as_array().cloned())
            .map(|items| items.iter().map(|i| Listed::from_json(i).id).collect())
            .unwrap_or_default()
    }

    /// SIGKILLs the app of `name` (as a crash would) and expects the supervisor to start a
    /// new one.
    pub(crate) fn expect_supervised(&self, name: &str, stage: &str) {
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

    pub(crate) fn listed(&self, name: &str) -> Option<Listed> {
        let run = self.conan(&["ls", "--json"]).ok()?;
        let v: Value = serde_json::from_str(&run.stdout).ok()?;
        v.as_array()?
            .iter()
            .map(Listed::from_json)
            .find(|d| d.name == name)
    }

    /// The local provider's `state.json` of deployment `id`.
    pub(crate) fn state_file(&self, id: &str) -> std::path::PathBuf {
        self.home
            .path()
            .join("local/deployments")
            .join(id)
            .join("state.json")
    }
}
