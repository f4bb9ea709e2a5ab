//! Alert settings: the `[monitor.alerts]` table, its webhooks and rules, validated when
//! read (each problem names the rule or webhook it is about).

use std::collections::BTreeMap;
use std::time::Duration;

use conan_core::DeploymentRecord;
use conan_core::time::serde_duration;
use serde::{Deserialize, Serialize};

/// The `[monitor.alerts]` table.
///
/// ```toml
/// [monitor.alerts]
/// interval = "1s"          # how often rules are evaluated (also on every status change)
/// excerpt_lines = 10       # log lines sent with a notification
/// retry_max = "30s"        # longest wait between delivery attempts
/// give_up_after = "24h"    # a notification older than this is dropped (logged as an error)
///
/// [[monitor.alerts.webhooks]]
/// name = "ops"
/// url = "http://127.0.0.1:9000/hooks/conan"
/// headers = { Authorization = "Bearer ..." }
/// timeout = "10s"
///
/// [[monitor.alerts.rules]]
/// name = "web-down"
/// when = "down"            # down | failed | restarts | error_logs | memory
/// for = "30s"              # the condition holds this long before the alert fires
/// resolve_for = "30s"      # and is clear this long before it resolves
/// deployment = "web"       # or labels = { tier = "web" }; neither: every deployment
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawAlertSettings", into = "RawAlertSettings")]
#[non_exhaustive]
pub struct AlertSettings {
    /// How often every rule is evaluated (default 1 s). Status changes and restarts are
    /// also evaluated as their events arrive.
    pub interval: Duration,
    /// How many of the deployment's last log lines a notification carries (default 10).
    pub excerpt_lines: usize,
    /// The longest wait between two delivery attempts (default 30 s; the wait starts at
    /// 1 s and doubles).
    pub retry_max: Duration,
    /// A notification still undelivered this long after it was made is dropped, with an
    /// error in the log (default 24 h).
    pub give_up_after: Duration,
    /// Where notifications go.
    pub webhooks: Vec<Webhook>,
    /// The rules.
    pub rules: Vec<AlertRule>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            excerpt_lines: 10,
            retry_max: Duration::from_secs(30),
            give_up_after: Duration::from_secs(24 * 3600),
            webhooks: Vec::new(),
            rules: Vec::new(),
        }
    }
}

impl std::fmt::Debug for AlertSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertSettings")
            .field("interval", &self.interval)
            .field("webhooks", &self.webhooks)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl AlertSettings {
    /// Whether there is anything to evaluate or deliver.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.webhooks.is_empty()
    }

    /// The webhook named `name`.
    #[must_use]
    pub fn webhook(&self, name: &str) -> Option<&Webhook> {
        self.webhooks.iter().find(|w| w.name == name)
    }

    /// The settings with `rules` and `webhooks` added (for embedding hosts and tests).
    ///
    /// # Errors
    /// The problems [`validate`](Self::validate) finds.
    pub fn with(mut self, webhooks: Vec<Webhook>, rules: Vec<AlertRule>) -> Result<Self, String> {
        self.webhooks.extend(webhooks);
        self.rules.extend(rules);
        self.validate()?;
        Ok(self)
    }

    /// Checks names are unique and every webhook a rule names exists.
    ///
    /// # Errors
    /// Every problem, one per line.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            if self.webhooks[..i].iter().any(|o| o.name == w.name) {
                problems.push(format!("webhook '{}' is defined twice", w.name));
            }
        }
        for (i, r) in self.rules.iter().enumerate() {
            if self.rules[..i].iter().any(|o| o.name == r.name) {
                problems.push(format!("alert rule '{}' is defined twice", r.name));
            }
            for hook in r.webhooks.iter().flatten() {
                if self.webhook(hook).is_none() {
                    problems.push(format!(
                        "alert rule '{}': no webhook is named '{hook}' (known: {})",
                        r.name,
                        known(self.webhooks.iter().map(|w| w.name.as_str()))
                    ));
                }
            }
        }
        if self.interval.is_zero() {
            problems.push("monitor.alerts.interval: must be more than 0s".to_owned());
        }
        if self.retry_max < Duration::from_secs(1) {
            problems.push("monitor.alerts.retry_max: must be at least 1s".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The webhooks a rule notifies: those it names, else all.
    pub(crate) fn webhooks_of<'a>(
        &'a self,
        rule: &'a AlertRule,
    ) -> impl Iterator<Item = &'a Webhook> {
        self.webhooks.iter().filter(move |w| {
            rule.webhooks
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == &w.name))
        })
    }
}

fn known<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// Where notifications are POSTed. The URL and headers may carry credentials: `Debug`
/// shows the scheme and host only and the header names only, and nothing logs them.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Webhook {
    /// Its name, used by rules and kept in the outbox instead of the URL.
    pub name: String,
    /// `http://host:port/path` (https is not supported: put a local TLS proxy in front).
    pub url: String,
    /// Extra request headers (an `Authorization` token, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// How long one attempt may take (default 10 s).
    #[serde(default = "default_timeout", with = "serde_duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Webhook {
    /// A webhook named `name` posting to `url`, with no headers and a 10 s timeout.
    #[must_use]
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            headers: BTreeMap::new(),
            timeout: default_timeout(),
        }
    }

    /// The URL's scheme and authority only (`http://hooks.example:9000`), for messages.
    #[must_use]
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// `scheme://host:port` of `url`, without user info, path or query.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("?", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    format!("{scheme}://{host}")
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &self.redacted_url())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What a rule watches. Each condition has a value (sent with the notification) and says
/// when it is breached and when it is clear; in between (a value between `resolve_below`
/// and `threshold`) the alert keeps its state.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum AlertCondition {
    /// Not serving when it should: `failed`, `restarting`, running while its health check
    /// fails, or stopped on its own (its process exited and the restart policy,
    /// `never` or `on-failure`, let it be). A stop by `conan stop` (any operation) is not
    /// down. Value: seconds since it went down.
    Down,
    /// `failed` only. Value: seconds since it failed.
    Failed,
    /// At least `threshold` supervisor restarts within `window`. Value: restarts in the
    /// window.
    Restarts {
        /// The sliding window.
        window: Duration,
    },
    /// At least `threshold` error (and worse) log lines in the last minute. Value: lines
    /// in the last minute.
    ErrorLogs,
    /// Resident memory at least `threshold` (a fraction) of the memory limit: the limit the
    /// provider reports, else the config's `resources.memory`. A deployment without a
    /// limit never fires. Value: the fraction.
    Memory,
}

impl AlertCondition {
    /// The `when` name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            AlertCondition::Down => "down",
            AlertCondition::Failed => "failed",
            AlertCondition::Restarts { .. } => "restarts",
            AlertCondition::ErrorLogs => "error_logs",
            AlertCondition::Memory => "memory",
        }
    }

    fn has_threshold(&self) -> bool {
        !matches!(self, AlertCondition::Down | AlertCondition::Failed)
    }
}

/// Which deployments a rule watches.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RuleTarget {
    /// Every deployment.
    All,
    /// The deployment of this name.
    Name(String),
    /// Deployments carrying all these labels.
    Labels(BTreeMap<String, String>),
}

impl RuleTarget {
    /// Whether `record` is watched.
    #[must_use]
    pub fn matches(&self, record: &DeploymentRecord) -> bool {
        match self {
            RuleTarget::All => true,
            RuleTarget::Name(name) => &*record.name == name,
            RuleTarget::Labels(labels) => labels
                .iter()
                .all(|(k, v)| record.config.labels.get(k) == Some(v)),
        }
    }
}

/// One alert rule.
///
/// # Hysteresis
///
/// A rule fires for a deployment once its condition has been breached without a break for
/// `for`; it resolves once the condition has been clear without a break for
/// `resolve_for`. For the threshold conditions, "clear" means the value fell below
/// `resolve_below` (default: the threshold), so a value hovering at the threshold does
/// not flap. A firing alert whose deployment is removed resolves at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawRule", into = "RawRule")]
#[non_exhaustive]
pub struct AlertRule {
    /// Its name (unique; what notifications and `conan alerts` show).
    pub name: String,
    /// What it watches.
    pub condition: AlertCondition,
    /// The threshold of `restarts`, `error_logs` and `memory` (0 for the others).
    pub threshold: f64,
    /// The value must fall below this to count as clear (default: the threshold).
    pub resolve_below: f64,
    /// Which deployments.
    pub target: RuleTarget,
    /// How long the condition holds before the alert fires.
    pub for_duration: Duration,
    /// How long the condition is clear before the alert resolves.
    pub resolve_for: Duration,
    /// The webhooks it notifies (`None`: all).
    pub webhooks: Option<Vec<String>>,
}

impl AlertRule {
    /// A rule named `name` on `condition` for every deployment, with `threshold` (ignored
    /// by `down` and `failed`), firing and resolving at once (`for` and `resolve_for` 0).
    #[must_use]
    pub fn new(name: impl Into<String>, condition: AlertCondition, threshold: f64) -> Self {
        let threshold = if condition.has_threshold() {
            threshold
        } else {
            0.0
        };
        Self {
            name: name.into(),
            condition,
            threshold,
            resolve_below: threshold,
            target: RuleTarget::All,
            for_duration: Duration::ZERO,
            resolve_for: Duration::ZERO,
            webhooks: None,
        }
    }

    /// The same rule with `for` and `resolve_for`.
    #[must_use]
    pub fn hold(mut self, for_duration: Duration, resolve_for: Duration) -> Self {
        self.for_duration = for_duration;
        self.resolve_for = resolve_for;
        self
    }

    /// The same rule for `target` only.
    #[must_use]
    pub fn target(mut self, target: RuleTarget) -> Self {
        self.target = target;
        self
    }

    /// The same rule, clear only below `resolve_below`.
    #[must_use]
    pub fn resolve_below(mut self, resolve_below: f64) -> Self {
        self.resolve_below = resolve_below;
        self
    }
}

/// A rule as written in TOML.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    when: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resolve_below: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "conan_core::time::serde_opt_duration"
    )]
    window: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "for", default = "default_hold", with = "serde_duration")]
    for_duration: Duration,
    #[serde(default = "default_hold", with = "serde_duration")]
    resolve_for: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webhooks: Option<Vec<String>>,
}

fn default_hold() -> Duration {
    Duration::from_secs(30)
}

const WHEN: &str = "down, failed, restarts, error_logs, memory";

impl TryFrom<RawRule> for AlertRule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        let name = raw.name.trim().to_owned();
        if name.is_empty() {
            return Err("an alert rule needs a name".to_owned());
        }
        let problem = |what: String| format!("alert rule '{name}': {what}");
        let condition = match raw.when.as_str() {
            "down" => AlertCondition::Down,
            "failed" => AlertCondition::Failed,
            "restarts" => AlertCondition::Restarts {
                window: raw.window.unwrap_or(Duration::from_secs(600)),
            },
            "error_logs" => AlertCondition::ErrorLogs,
            "memory" => AlertCondition::Memory,
            other => {
                return Err(problem(format!(
                    "when = \"{other}\" is not a condition (one of: {WHEN})"
                )));
            }
        };
        if raw.window.is_some() && !matches!(condition, AlertCondition::Restarts { .. }) {
            return Err(problem(format!(
                "`window` applies to when = \"restarts\" only, not \"{}\"",
                raw.when
            )));
        }
        if let AlertCondition::Restarts { window } = condition
            && window.is_zero()
        {
            return Err(problem("`window` must be more than 0s".to_owned()));
        }
        let threshold = match (condition.has_threshold(), raw.threshold) {
            (true, Some(t)) if t.is_finite() && t > 0.0 => t,
            (true, Some(t)) => {
                return Err(problem(format!(
                    "`threshold` must be more than 0 (got {t})"
                )));
            }
            (true, None) => {
                let example = match condition {
                    AlertCondition::Memory => "threshold = 0.9 (a fraction of the memory limit)",
                    AlertCondition::ErrorLogs => "threshold = 10 (error lines per minute)",
                    _ => "threshold = 5 (restarts within the window)",
                };
                return Err(problem(format!(
                    "when = \"{}\" needs a threshold, like {example}",
                    raw.when
                )));
            }
            (false, Some(_)) | (false, None) if raw.resolve_below.is_some() => {
                return Err(problem(format!(
                    "when = \"{}\" takes no `resolve_below`",
                    raw.when
                )));
            }
            (false, Some(_)) => {
                return Err(problem(format!(
                    "when = \"{}\" takes no threshold (use `for` for how long)",
                    raw.when
                )));
            }
            (false, None) => 0.0,
        };
        if matches!(condition, AlertCondition::Memory) && threshold > 1.0 {
            return Err(problem(format!(
                "a memory threshold is a fraction of the limit, at most 1 (got {threshold})"
            )));
        }
        let resolve_below = raw.resolve_below.unwrap_or(threshold);
        if !(resolve_below.is_finite() && resolve_below <= threshold && resolve_below >= 0.0) {
            return Err(problem(format!(
                "`resolve_below` must be between 0 and the threshold {threshold} (got {resolve_below})"
            )));
        }
        let target = match (raw.deployment, raw.labels) {
            (Some(_), Some(_)) => {
                return Err(problem(
                    "give `deployment` or `labels`, not both".to_owned(),
                ));
            }
            (Some(d), None) => RuleTarget::Name(d),
            (None, Some(l)) if l.is_empty() => RuleTarget::All,
            (None, Some(l)) => RuleTarget::Labels(l),
            (None, None) => RuleTarget::All,
        };
        Ok(AlertRule {
            name,
            condition,
            threshold,
            resolve_below,
            target,
            for_duration: raw.for_duration,
            resolve_for: raw.resolve_for,
            webhooks: raw.webhooks,
        })
    }
}

impl From<AlertRule> for RawRule {
    fn from(rule: AlertRule) -> Self {
        let has_threshold = rule.condition.has_threshold();
        let (deployment, labels) = match rule.target {
            RuleTarget::All => (None, None),
            RuleTarget::Name(n) => (Some(n), None),
            RuleTarget::Labels(l) => (None, Some(l)),
        };
        RawRule {
            name: rule.name,
            when: rule.condition.name().to_owned(),
            threshold: has_threshold.then_some(rule.threshold),
            resolve_below: (has_threshold && rule.resolve_below != rule.threshold)
                .then_some(rule.resolve_below),
            window: match rule.condition {
                AlertCondition::Restarts { window } => Some(window),
                _ => None,
            },
            deployment,
            labels,
            for_duration: rule.for_duration,
            resolve_for: rule.resolve_for,
            webhooks: rule.webhooks,
        }
    }
}

/// The `[monitor.alerts]` table as written.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAlertSettings {
    #[serde(with = "serde_duration")]
    interval: Duration,
    excerpt_lines: usize,
    #[serde(with = "serde_duration")]
    retry_max: Duration,
    #[serde(with = "serde_duration")]
    give_up_after: Duration,
    webhooks: Vec<Webhook>,
    rules: Vec<AlertRule>,
}

impl Default for RawAlertSettings {
    fn default() -> Self {
        AlertSettings::default().into()
    }
}

impl TryFrom<RawAlertSettings> for AlertSettings {
    type Error = String;

    fn try_from(raw: RawAlertSettings) -> Result<Self, String> {
        for w in &raw.webhooks {
            if let Err(e) = super::http::check_url(&w.url) {
                return Err(format!("webhook '{}': {e}", w.name));
            }
        }
        let settings = AlertSettings {
            interval: raw.interval,
            excerpt_lines: raw.excerpt_lines,
            retry_max: raw.retry_max,
            give_up_after: raw.give_up_after,
            webhooks: raw.webhooks,
            rules: raw.rules,
        };
        settings.validate()?;
        Ok(settings)
    }
}

impl From<AlertSettings> for RawAlertSettings {
    fn from(s: AlertSettings) -> Self {
        RawAlertSettings {
            interval: s.interval,
            excerpt_lines: s.excerpt_lines,
            retry_max: s.retry_max,
            give_up_after: s.give_up_after,
            webhooks: s.webhooks,
            rules: s.rules,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AlertSettings, String> {
        toml::from_str::<AlertSettings>(text).map_err(|e| e.message().to_owned())
    }

    #[test]
    fn a_full_table_is_read() {
        let s = parse(
            r#"
            interval = "2s"
            retry_max = "5s"
            [[webhooks]]
            name = "ops"
            url = "http://127.0.0.1:9/hook?token=secret"
            headers = { Authorization = "Bearer t0ken" }
            [[rules]]
            name = "web-down"
            when = "down"
            for = "1s"
            resolve_for = "2s"
            deployment = "web"
            [[rules]]
            name = "flapping"
            when = "restarts"
            threshold = 3
            window = "5m"
            labels = { tier = "web" }
            webhooks = ["ops"]
            [[rules]]
            name = "mem"
            when = "memory"
            threshold = 0.9
            resolve_below = 0.8
            "#,
        )
        .unwrap();
        assert_eq!(s.interval, Duration::from_secs(2));
        assert_eq!(s.rules.len(), 3);
        assert_eq!(s.rules[0].condition, AlertCondition::Down);
        assert_eq!(s.rules[0].for_duration, Duration::from_secs(1));
        assert_eq!(s.rules[0].target, RuleTarget::Name("web".into()));
        assert_eq!(
            s.rules[1].condition,
            AlertCondition::Restarts {
                window: Duration::from_secs(300)
            }
        );
        assert_eq!(s.rules[1].threshold, 3.0);
        assert_eq!(s.rules[2].resolve_below, 0.8);
        assert_eq!(s.rules[2].for_duration, Duration::from_secs(30), "default");
        // Round trip through TOML.
        let again: AlertSettings = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
        // Debug keeps the token out.
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("secret") && !debug.contains("t0ken"),
            "{debug}"
        );
        assert!(debug.contains("http://127.0.0.1:9"), "{debug}");
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                "[[rules]]\nname = \"a\"\nwhen = \"gone\"\n",
                "alert rule 'a': when = \"gone\" is not a condition",
            ),
            (
                "[[rules]]\nname = \"a\"\nwhen = \"memory\"\n",
                "alert rule 'a': when = \"memory\" needs a threshold",
            ),
            (
                "[[rules]]\nname = \"a\"\nwhen = \"memory\"\nthreshold = 90\n",
                "at most 1",
            ),
            (
                "[[rules]]\nname = \"a\"\nwhen = \"down\"\nthreshold = 1\n",
                "takes no threshold",
            ),
            (
                "[[rules]]\nname = \"a\"\nwhen = \"down\"\nwindow = \"1m\"\n",
                "`window` applies to when = \"restarts\" only",
            ),
            (
                "[[rules]]\nname = \"a\"\nwhen = \"error_logs\"\nthreshold = 5\nresolve_below = 9\n",
                "`resolve_below` must be between 0 and the threshold 5",
            ),
            (
                "[[rules]]\nname = \"a\"\nwhen = \"down\"\ndeployment = \"x\"\nlabels = { a = \"b\" }\n",
                "not both",
            ),
            (
                "[[rules]]\nname = \"a\"\nwhen = \"down\"\nwebhooks = [\"nope\"]\n",
                "no webhook is named 'nope' (known: none)",
            ),
            (
                "[[rules]]\nname = \"a\"\nwhen = \"down\"\n[[rules]]\nname = \"a\"\nwhen = \"failed\"\n",
                "alert rule 'a' is defined twice",
            ),
            (
                "[[rules]]\nname = \"a\"\nwhen = \"down\"\nbogus = 1\n",
                "unknown field `bogus`",
            ),
            (
                "[[webhooks]]\nname = \"ops\"\nurl = \"https://hooks.example/x\"\n",
                "webhook 'ops': https is not supported",
            ),
            ("nope = 1\n", "unknown field `nope`"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn redacted_urls_keep_only_scheme_and_host() {
        assert_eq!(
            redact_url("http://user:pw@hooks.example:9000/a/b?token=x"),
            "http://hooks.example:9000"
        );
        assert_eq!(redact_url("http://h"), "http://h");
    }
}
