//! Deploy, inspect, logs, metrics, stop, start and remove against the real daemon.

mod common;

use std::time::{Duration, Instant};

use common::*;
use conan_core::{
    ByteSize, Error, ExitStatus, HealthStatus, LogLevel, LogQuery, ObservedStatus,
    OperationContext, OutputStream, Provider, ProviderExt, Resources,
};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_app_without_dockerfile_runs_with_env_port_limits_logs_and_metrics() {
    let provider = provider().await;
    let mut scope = Scope::new("node");
    let dir = scope.node_app();
    std::fs::create_dir_all(dir.join("node_modules/junk")).unwrap();
    std::fs::write(dir.join("node_modules/junk/x.js"), "x").unwrap();
    std::fs::write(dir.join("secret.txt"), "do not ship").unwrap();
    std::fs::write(dir.join(".dockerignore"), "secret.txt\n").unwrap();
    let config = scope
        .config(&scope.name("app"), &dir)
        .env("GREETING", "hello-from-env")
        .port(8080)
        .resources(Resources {
            memory: Some(ByteSize(96 * 1024 * 1024)),
            cpus: Some(0.5),
        })
        .build()
        .unwrap();
    let spec = spec(config);
    let bus = conan_core::EventBus::new(4096);
    let mut events = bus.subscribe();
    let ctx = OperationContext::new(conan_core::EventSink::new(bus, None));

    let runtime = provider.deploy(&ctx, &spec, None).await.expect("deploy");
    let k = known(&spec, &runtime);
    let url = runtime.url.clone().expect("url");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let (status, body) = get(&url, "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("hello-from-env"),
        "env reaches the app: {body}"
    );
    assert!(
        body.contains("\"port\":8080"),
        "PORT reaches the app: {body}"
    );

    // Build output came as Building progress.
    let mut saw_build = false;
    while let Ok(env) = events.try_recv() {
        if let conan_core::Event::Progress {
            phase: conan_core::Phase::Building,
            ..
        } = env.event
        {
            saw_build = true;
        }
    }
    assert!(saw_build, "build output is reported as progress");

    // The image is tagged per revision and carries only what the context allowed.
    let tag = format!("conan/{}:r1", spec.name());
    assert_eq!(
        inspect(&tag, "{{index .Config.Labels \"conan.revision\"}}"),
        "1"
    );
    let id = &runtime.instances[0].id;
    let files = docker_lines(&["exec", id, "ls", "-a", "/app"]);
    assert!(files.contains(&"server.js".to_owned()), "{files:?}");
    assert!(
        !files.contains(&"secret.txt".to_owned()),
        ".dockerignore honoured: {files:?}"
    );
    assert!(
        !files.contains(&"node_modules".to_owned()),
        "node_modules left out: {files:?}"
    );

    // Limits, init, restart policy, labels, loopback binding.
    assert_eq!(
        inspect(id, "{{.HostConfig.Memory}}"),
        (96 * 1024 * 1024).to_string()
    );
    assert_eq!(inspect(id, "{{.HostConfig.NanoCpus}}"), "500000000");
    assert_eq!(inspect(id, "{{.HostConfig.Init}}"), "true");
    assert_eq!(
        inspect(id, "{{.HostConfig.RestartPolicy.Name}}"),
        "unless-stopped"
    );
    assert_eq!(
        inspect(id, "{{index .Config.Labels \"conan.managed\"}}"),
        "true"
    );
    assert_eq!(
        inspect(id, "{{index .Config.Labels \"conan.deployment\"}}"),
        spec.id.as_str()
    );
    assert_eq!(
        inspect(
            id,
            "{{(index (index .NetworkSettings.Ports \"8080/tcp\") 0).HostIp}}"
        ),
        "127.0.0.1"
    );
    let env_dump = inspect(id, "{{json .Config.Env}}");
    assert!(env_dump.contains("GREETING=hello-from-env"));
    // Debug of the provider error/config never shows the value.
    assert!(!format!("{:?}", spec.config).contains("hello-from-env"));

    assert!(provider.status(&k).await.unwrap().is_running());
    assert_eq!(
        provider.health(&k).await.unwrap().status,
        HealthStatus::Healthy
    );

    // Logs: history with levels, stream filter, and follow.
    assert!(
        eventually(Duration::from_secs(10), || async {
            let lines = provider.logs_vec(&k, &LogQuery::all()).await.unwrap();
            lines
                .iter()
                .any(|l| l.message.contains("listening on 8080"))
        })
        .await
    );
    let warn = provider
        .logs_vec(&k, &LogQuery::all().stream(OutputStream::Stderr))
        .await
        .unwrap();
    assert!(warn.iter().all(|l| l.stream == OutputStream::Stderr));
    assert!(
        warn.iter()
            .any(|l| l.level == LogLevel::Warn && l.message.contains("sample warning"))
    );
    let build = provider
        .logs_vec(&k, &LogQuery::all().stream(OutputStream::System))
        .await
        .unwrap();
    assert!(
        build.iter().any(|l| l.message.contains("COPY")),
        "build output is part of the deployment's logs: {build:?}"
    );
    let tail = provider
        .logs_vec(&k, &LogQuery::tail(1).stream(OutputStream::Stdout))
        .await
        .unwrap();
    assert_eq!(tail.len(), 1);
    let mut follow = provider
        .logs(
            &k,
            &LogQuery::tail(0).contains("request /followed").follow(),
        )
        .await
        .unwrap();
    get(&url, "/followed").await.unwrap();
    let line = tokio::time::timeout(Duration::from_secs(10), follow.next())
        .await
        .expect("followed line arrives")
        .expect("stream open")
        .unwrap();
    assert!(line.message.contains("request /followed"));
    drop(follow);

    // Metrics.
    get(&url, "/burn").await.unwrap();
    let m = provider.metrics(&k).await.unwrap();
    assert!(m.memory_bytes.unwrap_or(0) > 1_000_000, "{m:?}");
    assert_eq!(m.memory_limit_bytes, Some(96 * 1024 * 1024));
    assert!(m.pids.unwrap_or(0) >= 1, "{m:?}");
    assert!(m.cpu_percent.is_some(), "{m:?}");
    assert!(m.network_rx_bytes.is_some(), "{m:?}");
    assert_eq!(m.port, runtime.port());

    // Stop, start, remove.
    let t0 = Instant::now();
    provider.stop(&ctx, &k).await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "SIGTERM reaches node through init"
    );
    let stopped = known(&spec, &runtime.stopped());
    assert_eq!(
        provider.status(&stopped).await.unwrap(),
        ObservedStatus::Stopped
    );
    assert_eq!(
        provider.health(&stopped).await.unwrap().status,
        HealthStatus::Unknown,
        "nothing runs: no stale Healthy"
    );
    provider
        .stop(&ctx, &stopped)
        .await
        .expect("stop is idempotent");
    let again = provider.start(&ctx, &stopped).await.unwrap();
    assert_eq!(
        again.instances[0].id, runtime.instances[0].id,
        "start resumes the stopped container"
    );
    let (status, _) = get(again.url.as_deref().unwrap(), "/").await.unwrap();
    assert_eq!(status, 200);
    let k = known(&spec, &again);

    provider.remove(&ctx, &k).await.unwrap();
    assert!(
        docker_lines(&[
            "ps",
            "-aq",
            "--filter",
            "label=conan.managed",
            "--filter",
            &format!("label=conan.deployment={}", spec.id)
        ])
        .is_empty()
    );
    assert!(
        scope.images().is_empty(),
        "remove deletes the images: {:?}",
        scope.images()
    );
    assert!(matches!(
        provider.status(&k).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerfile_project_with_its_own_healthcheck() {
    let provider = provider().await;
    let mut scope = Scope::new("dockerfile");
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY server.js /srv/server.js\n\
         HEALTHCHECK --interval=1s --timeout=1s --retries=3 CMD wget -q -O /dev/null http://127.0.0.1:3000/health || exit 1\n\
         CMD [\"node\", \"/srv/server.js\"]\n"
    );
    let dir = scope.app_dir(&[("Dockerfile", &dockerfile), ("server.js", SERVER_JS)]);
    let config = scope
        .config(&scope.name("df"), &dir)
        .env("APP_REVISION", "df")
        // A command check runs inside the container (docker exec).
        .health_check(conan_core::HealthCheck::command(
            "wget -q -O /dev/null http://127.0.0.1:3000/health",
        ))
        .build()
        .unwrap();
    let spec = spec(config);
    let ctx = OperationContext::detached();
    let runtime = provider.deploy(&ctx, &spec, None).await.expect("deploy");
    let id = &runtime.instances[0].id;
    assert_eq!(
        inspect(id, "{{.State.Health.Status}}"),
        "healthy",
        "gate waited for Docker's health"
    );
    let (_, body) = get(runtime.url.as_deref().unwrap(), "/").await.unwrap();
    assert!(body.contains("\"revision\":\"df\""));
    provider
        .remove(&ctx, &known(&spec, &runtime))
        .await
        .unwrap();
    assert!(scope.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_image_runs_and_a_missing_one_is_a_clear_error() {
    let provider = provider().await;
    let mut scope = Scope::new("image");
    let config = scope
        .mounted_config(&scope.name("img"))
        .env("APP_REVISION", "img")
        .build()
        .unwrap();
    let spec1 = spec(config);
    let ctx = OperationContext::detached();
    let runtime = provider.deploy(&ctx, &spec1, None).await.expect("deploy");
    let (_, body) = get(runtime.url.as_deref().unwrap(), "/").await.unwrap();
    assert!(body.contains("\"revision\":\"img\""), "{body}");
    assert_eq!(
        inspect(&format!("conan/{}:r1", spec1.name()), "{{.Id}}"),
        inspect(BASE_IMAGE, "{{.Id}}")
    );
    provider
        .remove(&ctx, &known(&spec1, &runtime))
        .await
        .unwrap();
    assert!(
        !docker_lines(&["images", "-q", BASE_IMAGE]).is_empty(),
        "removing the tag keeps the base image"
    );

    let dir = scope.node_app();
    let config = scope
        .config(&scope.name("missing"), &dir)
        .provider_options(
            "docker",
            conan_provider_docker::DockerOptions {
                image: Some("conan-test/does-not-exist:1".into()),
                ..Default::default()
            },
        )
        .build()
        .unwrap();
    let spec2 = spec(config);
    let err = provider.deploy(&ctx, &spec2, None).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("conan-test/does-not-exist:1") && text.contains("docker pull"),
        "{text}"
    );
    assert!(!err.is_transient());
    assert!(scope.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_dockerfile_reports_the_failing_step_and_leaves_nothing() {
    let provider = provider().await;
    let mut scope = Scope::new("broken");
    let dockerfile =
        format!("FROM {BASE_IMAGE}\nRUN echo about-to-fail && exit 7\nCMD [\"node\"]\n");
    let dir = scope.app_dir(&[("Dockerfile", &dockerfile)]);
    let spec = spec(scope.config(&scope.name("bad"), &dir).build().unwrap());
    let err = provider
        .deploy(&OperationContext::detached(), &spec, None)
        .await
        .unwrap_err();
    match &err {
        Error::BuildFailed { step, message, .. } => {
            assert!(step.contains("RUN echo about-to-fail"), "step: {step}");
            assert!(message.contains("about-to-fail"), "output: {message}");
            assert!(message.contains('7'), "exit code: {message}");
        }
        other => panic!("expected BuildFailed, got {other:?}"),
    }
    assert!(scope.containers().is_empty());
    assert!(scope.images().is_empty(), "{:?}", scope.images());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_exiting_at_once_fails_with_a_bundle_and_is_removed() {
    let provider = provider().await;
    let mut scope = Scope::new("crash");
    let config = scope
        .mounted_config(&scope.name("crash"))
        .env("CRASH", "1")
        .build()
        .unwrap();
    let spec = spec(config);
    let started = Instant::now();
    let err = provider
        .deploy(&OperationContext::detached(), &spec, None)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "fails fast, not at the deadline"
    );
    let failure = err
        .failure()
        .unwrap_or_else(|| panic!("a failure bundle: {err:?}"));
    assert_eq!(failure.exit, Some(ExitStatus::Code(3)), "{failure:?}");
    assert!(
        failure
            .last_logs
            .iter()
            .any(|l| l.message.contains("crashing on purpose")),
        "{:?}",
        failure.last_logs
    );
    assert!(
        scope.containers().is_empty(),
        "nothing left: {:?}",
        scope.containers()
    );
    assert!(
        scope.images().is_empty(),
        "no image tag left: {:?}",
        scope.images()
    );
}

#[tokio::test]
async fn unreachable_daemon_is_provider_unavailable_quickly() {
    for host in ["unix:///tmp/conan-no-such-docker.sock", "tcp://127.0.0.1:1"] {
        let started = Instant::now();
        let err = conan_provider_docker::DockerProvider::builder()
            .host(host)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(err, Error::ProviderUnavailable { .. }), "{err:?}");
        assert!(err.is_transient());
        let text = err.to_string();
        assert!(
            text.contains(host) && text.contains("DOCKER_HOST"),
            "says what is wrong and which setting fixes it: {text}"
        );
        assert!(
            !text.contains(".ci/") && !text.contains("storage-driver"),
            "no test-environment hints in user-facing errors: {text}"
        );
    }
}
