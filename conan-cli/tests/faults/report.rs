//! Collecting violations, and describing what a command answered.

use super::*;

/// The violations of one scenario; the test fails at its end when there is any.
pub(crate) struct Report {
    pub(crate) scenario: &'static str,
    pub(crate) started: Instant,
    pub(crate) failures: Mutex<Vec<String>>,
}

impl Report {
    pub(crate) fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            started: Instant::now(),
            failures: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn fail(&self, what: &str, message: impl fmt::Display) {
        let line = format!("[{}] {what}: {message}", self.scenario);
        eprintln!("INVARIANT VIOLATED {line}");
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    #[track_caller]
    pub(crate) fn finish(self) {
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
pub(crate) struct Listed {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) status: String,
    pub(crate) pid: Option<i32>,
    pub(crate) revision: u64,
}

impl Listed {
    pub(crate) fn from_json(v: &Value) -> Self {
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
pub(crate) fn outcome(result: &Result<Run, String>) -> String {
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
pub(crate) fn full_text(result: &Result<Run, String>) -> String {
    match result {
        Ok(run) => format!("{}\n{}", run.stdout, run.stderr),
        Err(e) => e.clone(),
    }
}
