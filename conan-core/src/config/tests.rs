use super::*;

#[test]
fn minimal_toml_gets_documented_defaults() {
    let c = DeploymentConfig::from_toml_str(r#"name = "hello""#).unwrap();
    assert_eq!(c.source, PathBuf::from("."));
    assert_eq!(c.replicas, 1);
    assert_eq!(c.stop.timeout, Duration::from_secs(5));
    assert_eq!(c.stop.signal, StopSignal::Term);
    assert_eq!(c.restart.backoff_initial, Duration::from_millis(100));
    assert_eq!(c.restart.backoff_max, Duration::from_secs(30));
    assert_eq!(c.restart.reset_after, Duration::from_secs(30));
    assert_eq!(c.restart.max_restarts, 10);
    assert_eq!(c.restart.window, Duration::from_secs(600));
    assert_eq!(c.update.strategy, UpdateStrategy::BlueGreen);
    assert!(c.update.auto_rollback);
    assert_eq!(c, DeploymentConfig::new("hello"));
}

#[test]
fn full_toml_parses() {
    let text = r#"
name = "api"
source = "./app"
provider = "docker"
port = 8080
start_command = "node server.js"
replicas = 2
requirements = ["health-checks", "blue-green"]

[env]
NODE_ENV = "production"

[health_check]
type = "http"
path = "/health"
interval = "250ms"
timeout = "1s"
failure_threshold = 2

[restart]
policy = "on-failure"
max_restarts = 5
window = "2m"

[stop]
signal = "SIGINT"
timeout = "10s"

[resources]
memory = "512MiB"
cpus = 0.5

[update]
strategy = "rolling"
healthy_deadline = "30s"

[labels]
team = "web"

[provider_options.docker]
image = "node:20-slim"
"#;
    let c = DeploymentConfig::from_toml_str(text).unwrap();
    assert_eq!(c.port, Some(8080));
    assert_eq!(c.env.get("NODE_ENV"), Some("production"));
    let h = c.health_check.as_ref().unwrap();
    assert_eq!(h.interval, Duration::from_millis(250));
    assert_eq!(h.http_path(), "/health");
    assert_eq!(c.restart.policy, RestartMode::OnFailure);
    assert_eq!(c.restart.window, Duration::from_secs(120));
    assert_eq!(c.stop.signal, StopSignal::Int);
    assert_eq!(c.resources.memory, Some(ByteSize::mib(512)));
    assert_eq!(c.update.strategy, UpdateStrategy::Rolling);
    assert_eq!(c.requirements.iter().count(), 2);

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct DockerOpts {
        image: String,
    }
    let opts: Option<DockerOpts> = c.provider_options_for("docker").unwrap();
    assert_eq!(opts.unwrap().image, "node:20-slim");
    assert_eq!(
        c.provider_options_for::<DockerOpts>("railway").unwrap(),
        None
    );

    // TOML and JSON round trips preserve everything.
    let again = DeploymentConfig::from_toml_str(&c.to_toml_string().unwrap()).unwrap();
    assert_eq!(again, c);
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(DeploymentConfig::from_json_str(&json).unwrap(), c);
}

#[test]
fn five_mistakes_are_all_reported_with_paths() {
    let text = r#"
name = "My_App"
port = 0

[env]
1BAD = "x"

[health_check]
path = "health"
failure_threshold = 0
"#;
    let err = DeploymentConfig::from_toml_str(text).unwrap_err();
    let Error::InvalidConfig { problems } = &err else {
        panic!("{err}")
    };
    let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "name",
            "env.1BAD",
            "port",
            "health_check.path",
            "health_check.failure_threshold"
        ],
        "{err}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains("health_check.path: must start with '/'"),
        "{shown}"
    );
}

#[test]
fn more_rules() {
    let mut c = DeploymentConfig::new("ok");
    c.replicas = 0;
    c.restart.backoff_initial = Duration::ZERO;
    c.restart.jitter = 2.0;
    c.stop.timeout = Duration::ZERO;
    c.update.healthy_deadline = Duration::ZERO;
    c.start_command = Some("  ".into());
    c.health_check = Some(HealthCheck::command(""));
    c.resources.cpus = Some(-1.0);
    let Err(Error::InvalidConfig { problems }) = c.validate() else {
        panic!()
    };
    let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "replicas",
        "restart.backoff_initial",
        "restart.jitter",
        "stop.timeout",
        "update.healthy_deadline",
        "start_command",
        "health_check.command",
        "resources.cpus",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
}

#[test]
fn dns_label_rule() {
    use super::validate::is_dns_label;
    assert!(is_dns_label("a"));
    assert!(is_dns_label("hello-world-2"));
    assert!(is_dns_label(&"a".repeat(63)));
    assert!(!is_dns_label(&"a".repeat(64)));
    assert!(!is_dns_label(""));
    assert!(!is_dns_label("-a"));
    assert!(!is_dns_label("a-"));
    assert!(!is_dns_label("Hello"));
    assert!(!is_dns_label("a_b"));
}

#[test]
fn unknown_fields_and_bad_durations_are_rejected() {
    let err = DeploymentConfig::from_toml_str("name = \"a\"\nprot = 3000").unwrap_err();
    assert!(err.to_string().contains("prot"), "{err}");
    let err =
        DeploymentConfig::from_toml_str("name = \"a\"\n[stop]\ntimeout = \"soon\"").unwrap_err();
    assert!(err.to_string().contains("invalid duration"), "{err}");
}

#[test]
fn debug_never_shows_env_values() {
    let c = DeploymentConfig::builder("a")
        .env("API_KEY", "s3cr3t-value")
        .build()
        .unwrap();
    let shown = format!("{c:?}");
    assert!(shown.contains("API_KEY"));
    assert!(!shown.contains("s3cr3t-value"));
    let err = DeploymentConfig::builder("A")
        .env("API_KEY", "s3cr3t-value")
        .build()
        .unwrap_err();
    assert!(!format!("{err:?} {err}").contains("s3cr3t-value"));
}

#[test]
fn builder_reports_all_problems() {
    let err = DeploymentConfig::builder("Bad Name")
        .replicas(0)
        .port(0)
        .build()
        .unwrap_err();
    let Error::InvalidConfig { problems } = err else {
        panic!()
    };
    assert_eq!(problems.len(), 3);
}

/// Issue 10, finding 2: `"18446744073709551615s"` parsed, passed validation and made the
/// local provider panic adding it to an `Instant`. Every duration now has a maximum,
/// reported with its path.
#[test]
fn every_duration_has_a_documented_maximum() {
    const HUGE: &str = "18446744073709551615s";
    let text = format!(
        r#"
name = "api"
[health_check]
type = "tcp"
interval = "{HUGE}"
timeout = "{HUGE}"
start_period = "{HUGE}"
[restart]
window = "{HUGE}"
backoff_initial = "{HUGE}"
backoff_max = "{HUGE}"
reset_after = "{HUGE}"
min_uptime = "{HUGE}"
[stop]
timeout = "{HUGE}"
[update]
min_healthy_time = "{HUGE}"
healthy_deadline = "{HUGE}"
"#
    );
    let Err(Error::InvalidConfig { problems }) = DeploymentConfig::from_toml_str(&text) else {
        panic!("absurd durations must be rejected");
    };
    let got: Vec<String> = problems.iter().map(ToString::to_string).collect();
    for (path, max) in [
        ("health_check.interval", "1h"),
        ("health_check.timeout", "10m"),
        ("health_check.start_period", "1h"),
        ("restart.window", "24h"),
        ("restart.backoff_initial", "1h"),
        ("restart.backoff_max", "1h"),
        ("restart.reset_after", "24h"),
        ("restart.min_uptime", "1h"),
        ("stop.timeout", "1h"),
        ("update.min_healthy_time", "1h"),
        ("update.healthy_deadline", "24h"),
    ] {
        let expected = format!("{path}: at most {max} (got {HUGE})");
        assert!(got.contains(&expected), "missing {expected:?} in {got:#?}");
    }
    assert_eq!(got.len(), 11, "{got:#?}");
}

#[test]
fn each_maximum_is_inclusive() {
    use super::limits::*;
    let mut c = DeploymentConfig::new("api");
    c.health_check = Some(
        HealthCheck::tcp()
            .interval(HEALTH_CHECK_INTERVAL)
            .timeout(HEALTH_CHECK_TIMEOUT),
    );
    if let Some(h) = &mut c.health_check {
        h.start_period = HEALTH_CHECK_START_PERIOD;
    }
    c.restart.window = RESTART_WINDOW;
    c.restart.backoff_initial = RESTART_BACKOFF;
    c.restart.backoff_max = RESTART_BACKOFF;
    c.restart.reset_after = RESTART_RESET_AFTER;
    c.restart.min_uptime = RESTART_MIN_UPTIME;
    c.stop.timeout = STOP_TIMEOUT;
    c.update.min_healthy_time = UPDATE_MIN_HEALTHY_TIME;
    c.update.healthy_deadline = UPDATE_HEALTHY_DEADLINE;
    c.validate().unwrap();

    // One past each bound, one field at a time: exactly that field's path is reported.
    fn over(d: Duration) -> Duration {
        d + Duration::from_millis(1)
    }
    type Break = Box<dyn Fn(&mut DeploymentConfig)>;
    let cases: Vec<(&str, Break)> = vec![
        (
            "health_check.interval",
            Box::new(|c| c.health_check.as_mut().unwrap().interval = over(HEALTH_CHECK_INTERVAL)),
        ),
        (
            "health_check.timeout",
            Box::new(|c| c.health_check.as_mut().unwrap().timeout = over(HEALTH_CHECK_TIMEOUT)),
        ),
        (
            "health_check.start_period",
            Box::new(|c| {
                c.health_check.as_mut().unwrap().start_period = over(HEALTH_CHECK_START_PERIOD)
            }),
        ),
        (
            "restart.window",
            Box::new(|c| c.restart.window = over(RESTART_WINDOW)),
        ),
        (
            "restart.backoff_initial",
            Box::new(|c| {
                c.restart.backoff_initial = over(RESTART_BACKOFF);
            }),
        ),
        (
            "restart.backoff_max",
            Box::new(|c| c.restart.backoff_max = over(RESTART_BACKOFF)),
        ),
        (
            "restart.reset_after",
            Box::new(|c| c.restart.reset_after = over(RESTART_RESET_AFTER)),
        ),
        (
            "restart.min_uptime",
            Box::new(|c| c.restart.min_uptime = over(RESTART_MIN_UPTIME)),
        ),
        (
            "stop.timeout",
            Box::new(|c| c.stop.timeout = over(STOP_TIMEOUT)),
        ),
        (
            "update.min_healthy_time",
            Box::new(|c| c.update.min_healthy_time = over(UPDATE_MIN_HEALTHY_TIME)),
        ),
        (
            "update.healthy_deadline",
            Box::new(|c| c.update.healthy_deadline = over(UPDATE_HEALTHY_DEADLINE)),
        ),
    ];
    for (path, break_it) in cases {
        let mut broken = c.clone();
        break_it(&mut broken);
        let Err(Error::InvalidConfig { problems }) = broken.validate() else {
            panic!("{path} past its maximum was accepted");
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        // backoff_initial past the bound is also larger than backoff_max.
        assert!(paths.contains(&path), "{path}: {problems:?}");
        assert!(
            problems.iter().any(|p| p.message.starts_with("at most ")),
            "{problems:?}"
        );
    }
}

#[test]
fn a_rolling_update_that_cannot_move_and_a_bad_canary_plan_are_errors_with_paths() {
    let parsed = DeploymentConfig::from_toml_str(
        "name = \"web\"\nreplicas = 3\n[update]\nstrategy = \"canary\"\nmax_surge = 0\nmax_unavailable = 0\n[update.canary]\nmax_error_ratio_increase = 2.0\nmin_requests = 0\n[[update.canary.steps]]\nshare = 50\nduration = \"10s\"\n[[update.canary.steps]]\nshare = 20\nduration = \"0s\"\n[[update.canary.steps]]\nshare = 100\nduration = \"5s\"\n",
    );
    let Err(Error::InvalidConfig { problems }) = parsed else {
        panic!("{parsed:?}")
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "update.max_surge",
        "update.canary.max_error_ratio_increase",
        "update.canary.min_requests",
        "update.canary.steps[1].share",
        "update.canary.steps[1].duration",
        "update.canary.steps[2].share",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        shown.contains(
            &"update.canary.steps[1].share: shares must grow from step to step (20 after 50)"
                .to_owned()
        ),
        "{shown:?}"
    );
    // The defaults: surge 1, unavailable 0; a canary plan of 10 % then 50 %, 30 s each.
    let ok = DeploymentConfig::from_toml_str(
        "name = \"web\"\n[update]\nstrategy = \"canary\"\n[update.canary]\n",
    )
    .unwrap();
    assert_eq!((ok.update.max_surge, ok.update.max_unavailable), (1, 0));
    let plan = ok.update.canary.unwrap();
    assert_eq!(
        plan.steps.iter().map(|s| s.share).collect::<Vec<_>>(),
        vec![10, 50]
    );
}

#[test]
fn replicas_take_a_count_or_an_autoscaling_table() {
    let fixed = DeploymentConfig::from_toml_str("name = \"web\"\nreplicas = 3\n").unwrap();
    assert_eq!((fixed.replicas, fixed.autoscale.is_none()), (3, true));
    let auto = DeploymentConfig::from_toml_str(
        "name = \"web\"\nreplicas = { min = 2, max = 5, target_in_flight = 8, scale_in_cooldown = \"5m\" }\n",
    )
    .unwrap();
    let a = auto.autoscale.clone().unwrap();
    assert_eq!(auto.replicas, 2, "starts at min");
    assert_eq!((a.min, a.max, a.target_in_flight), (2, 5, Some(8.0)));
    assert_eq!(a.scale_out_cooldown, Duration::from_secs(30));
    assert_eq!(a.scale_in_cooldown, Duration::from_secs(300));
    assert_eq!(auto.max_replicas(), 5);
    // Round trips: TOML, JSON (the store's form), and an old integer in JSON.
    let again = DeploymentConfig::from_toml_str(&auto.to_toml_string().unwrap()).unwrap();
    assert_eq!(again, auto);
    let json = serde_json::to_string(&auto).unwrap();
    assert!(json.contains("\"replicas\":{\"min\":2"), "{json}");
    assert_eq!(DeploymentConfig::from_json_str(&json).unwrap(), auto);
    let old = DeploymentConfig::from_json_str(r#"{"name":"web","replicas":4}"#).unwrap();
    assert_eq!(old.replicas, 4);
    let cpu = DeploymentConfig::from_json_str(
        r#"{"name":"web","replicas":{"min":1,"max":3,"target_cpu":70}}"#,
    )
    .unwrap();
    assert_eq!(
        cpu.autoscale.unwrap().target(),
        Some(crate::config::ScaleTarget::Cpu(70.0))
    );
    let built = DeploymentConfig::builder("web")
        .autoscale(Autoscale::in_flight(1, 4, 8.0))
        .build()
        .unwrap();
    assert_eq!(built.replicas, 1);
}

#[test]
fn autoscaling_problems_are_all_listed_with_their_paths() {
    let err = DeploymentConfig::from_toml_str(
        "name = \"web\"\nreplicas = { min = 0, max = 0, target_in_flight = -1, target_cpu = 50, scale_out_cooldown = \"2d\" }\n[endpoint]\nenabled = false\n",
    )
    .unwrap_err()
    .to_string();
    for want in [
        "replicas.min: must be at least 1",
        "replicas: set one target, target_in_flight or target_cpu, not both",
        "replicas.target_in_flight: must be a number above 0 (got -1)",
        "replicas.scale_out_cooldown: at most 24h",
        "replicas: autoscaling needs the deployment's endpoint",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
    let err = DeploymentConfig::from_toml_str("name = \"web\"\nreplicas = { min = 3, max = 2 }\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("replicas.max: must be at least replicas.min (3)"),
        "{err}"
    );
    assert!(err.contains("needs a target"), "{err}");
    let err = DeploymentConfig::from_toml_str(
        "name = \"web\"\nreplicas = { min = 1, max = 2, target = 3 }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown field `target`"), "{err}");
    let err = DeploymentConfig::from_toml_str("name = \"web\"\nreplicas = \"two\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("a number of replicas, or a table"), "{err}");
}
