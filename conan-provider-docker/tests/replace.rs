//! `Provider::replace`: a fresh container of the same revision beside the old one, the
//! cutover only once it is ready, then the old one removed; on failure or cancellation the
//! old one serves untouched and nothing of the attempt is left; a fixed host port is
//! `NotSupported`; an abandoned replace leaves a second container that recovery (a fresh
//! provider) and a repeated replace each reduce to exactly one. (Through the real proxy
//! under load: `conan-proxy/tests/docker.rs`.)

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use conan_core::traffic::Cutover;
use conan_core::{
    DeploymentConfigBuilder, Error, KnownDeployment, ObservedStatus, OperationContext, Provider,
    RuntimeInfo,
};
use conan_provider_docker::DockerOptions;
use tokio_util::sync::CancellationToken;

/// Running container ids of the scope.
fn running(scope: &Scope) -> Vec<String> {
    docker_lines(&[
        "ps",
        "-q",
        "--filter",
        &format!("label={TEST_LABEL}={}", scope.tag),
    ])
}

fn same(full: &str, short: &[String]) -> bool {
    short.len() == 1 && full.starts_with(&short[0])
}

/// A cutover that records the runtime it was handed and, at that moment, whether the
/// fresh container answered and how many containers ran.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(RuntimeInfo, bool, usize)>>>,
}

impl Recorder {
    fn cutover(&self, tag: String) -> Cutover {
        let seen = self.seen.clone();
        Cutover::new(move |runtime: RuntimeInfo| {
            let (seen, tag) = (seen.clone(), tag.clone());
            Box::pin(async move {
                let url = runtime.url.clone().unwrap_or_default();
                let answers = get(&url, "/health").await.is_ok_and(|(s, _)| s == 200);
                let n =
                    docker_lines(&["ps", "-q", "--filter", &format!("label={TEST_LABEL}={tag}")])
                        .len();
                seen.lock().unwrap().push((runtime, answers, n));
            })
        })
    }
}

/// A cutover that never ends: the call hangs there until abandoned.
fn hanging_cutover() -> Cutover {
    Cutover::new(|_| Box::pin(std::future::pending()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_starts_a_fresh_container_switches_then_removes_the_old_one() {
    let provider = provider().await;
    let mut scope = Scope::new("replace");
    let name = scope.name("rp");
    let v1 = spec(scope.mounted_config(&name).build().unwrap());
    let r1 = provider
        .deploy(&OperationContext::detached(), &v1, None)
        .await
        .expect("deploy");
    let old = r1.instances[0].clone();

    let recorder = Recorder::default();
    let ctx = OperationContext::detached().with_cutover(Some(recorder.cutover(scope.tag.clone())));
    let r2 = provider
        .replace(&ctx, &known(&v1, &r1))
        .await
        .expect("replace");
    let new = r2.instances[0].clone();
    assert_ne!(new.id, old.id, "a fresh container");
    assert_ne!(new.port, old.port, "on a fresh published port");
    assert_eq!(new.revision, v1.revision, "of the same revision");
    {
        let seen = recorder.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one cutover");
        let (routed, answered, containers) = &seen[0];
        assert_eq!(routed.instances, r2.instances, "to the fresh container");
        assert!(answered, "the fresh container was ready before the cutover");
        assert_eq!(*containers, 2, "the old one still ran during the cutover");
    }
    assert!(
        same(&new.id, &scope.containers()),
        "only the fresh container is left"
    );
    let k2 = known(&v1, &r2);
    assert_eq!(provider.status(&k2).await.unwrap(), ObservedStatus::Running);
    let (status, _) = get(r2.url.as_deref().unwrap(), "/").await.unwrap();
    assert_eq!(status, 200);

    // A fixed host port cannot be published twice: NotSupported, nothing started.
    let fixed = DockerOptions {
        image: Some(BASE_IMAGE.to_owned()),
        host_port: Some(39_871),
        ..DockerOptions::default()
    };
    let mut v_fixed = v1.clone();
    v_fixed.config = Arc::new(
        scope
            .config(&name, &v1.config.source)
            .start_command("node server.js")
            .provider_options("docker", fixed)
            .build()
            .unwrap(),
    );
    let err = provider
        .replace(&OperationContext::detached(), &known(&v_fixed, &r2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
    assert!(same(&new.id, &scope.containers()), "nothing started");
}

/// The sample app with a health check that fails while `/app/down` exists (the directory
/// is bind-mounted, so the test flips it for containers started later and running ones).
fn toggled_config(scope: &mut Scope, name: &str) -> (DeploymentConfigBuilder, std::path::PathBuf) {
    let dir = scope.app_dir(&[(
        "server.js",
        r"
const http = require('http');
const fs = require('fs');
const port = Number(process.env.PORT || 3000);
http.createServer((req, res) => {
  if (req.url === '/health') { res.writeHead(fs.existsSync('/app/down') ? 500 : 200); return res.end(); }
  res.writeHead(200); res.end('ok');
}).listen(port, '0.0.0.0');
process.on('SIGTERM', () => process.exit(0));
",
    )]);
    let options = DockerOptions {
        image: Some(BASE_IMAGE.to_owned()),
        volumes: vec![format!("{}:/app:ro", dir.display())],
        ..DockerOptions::default()
    };
    let builder = scope
        .config(name, &dir)
        .start_command("node server.js")
        .healthy_deadline(Duration::from_secs(3))
        .provider_options("docker", options);
    (builder, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_cancelled_replace_leaves_the_old_container_serving_and_nothing_else() {
    let provider = provider().await;
    let mut scope = Scope::new("replacefail");
    let name = scope.name("rf");
    let (builder, dir) = toggled_config(&mut scope, &name);
    let v1 = spec(builder.build().unwrap());
    let r1 = provider
        .deploy(&OperationContext::detached(), &v1, None)
        .await
        .expect("deploy");
    let k1 = known(&v1, &r1);
    let old = r1.instances[0].id.clone();

    // The fresh container never gets ready: the cutover is never reached.
    std::fs::write(dir.join("down"), "").unwrap();
    let recorder = Recorder::default();
    let ctx = OperationContext::detached().with_cutover(Some(recorder.cutover(scope.tag.clone())));
    let err = provider.replace(&ctx, &k1).await.unwrap_err();
    assert!(matches!(err, Error::HealthCheckFailed { .. }), "{err:?}");
    assert!(recorder.seen.lock().unwrap().is_empty(), "no cutover");
    assert!(
        same(&old, &scope.containers()),
        "the fresh container was removed"
    );
    assert!(same(&old, &running(&scope)), "the old one runs");
    assert_eq!(provider.status(&k1).await.unwrap(), ObservedStatus::Running);

    // Cancelled while the fresh container waits for its gate: the same.
    let cancel = CancellationToken::new();
    let ctx = OperationContext::with_cancel(conan_core::EventSink::detached(), cancel.clone())
        .with_cutover(Some(recorder.cutover(scope.tag.clone())));
    let canceller = {
        let cancel = cancel.clone();
        let tag = scope.tag.clone();
        tokio::spawn(async move {
            // Once the fresh container exists.
            eventually(Duration::from_secs(20), || {
                let tag = tag.clone();
                async move {
                    docker_lines(&["ps", "-q", "--filter", &format!("label={TEST_LABEL}={tag}")])
                        .len()
                        == 2
                }
            })
            .await;
            cancel.cancel();
        })
    };
    let err = provider.replace(&ctx, &k1).await.unwrap_err();
    canceller.await.unwrap();
    assert!(matches!(err, Error::Cancelled { .. }), "{err:?}");
    assert!(recorder.seen.lock().unwrap().is_empty(), "no cutover");
    assert!(
        same(&old, &scope.containers()),
        "nothing of the attempt is left"
    );
    std::fs::remove_file(dir.join("down")).unwrap();
    let (status, body) = get(r1.url.as_deref().unwrap(), "/").await.unwrap();
    assert!(
        status == 200 && body.contains("ok"),
        "the old container serves: {body}"
    );
}

/// Starts a replace whose cutover never ends and drops it there (as the manager's deadline
/// would); answers whether the fresh container had started beside the old one.
async fn abandon(provider: &conan_provider_docker::DockerProvider, k: &KnownDeployment) -> bool {
    let filter = format!("label=conan.deployment={}", k.id());
    let (provider, k) = (provider.clone(), k.clone());
    let call = tokio::spawn(async move {
        let ctx = OperationContext::detached().with_cutover(Some(hanging_cutover()));
        provider.replace(&ctx, &k).await
    });
    let started = eventually(Duration::from_secs(30), || async {
        docker_lines(&["ps", "-q", "--filter", &filter]).len() == 2
    })
    .await;
    // Past the gate too: give the call the moment it needs to reach the cutover.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!call.is_finished(), "the call waits at the cutover");
    call.abort();
    let _ = call.await;
    started
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_replace_is_reduced_to_one_container_by_recovery_and_by_a_new_replace() {
    let provider = provider().await;
    let mut scope = Scope::new("replaceabandon");
    let name = scope.name("ra");
    let v1 = spec(scope.mounted_config(&name).build().unwrap());
    let r1 = provider
        .deploy(&OperationContext::detached(), &v1, None)
        .await
        .expect("deploy");
    let k1 = known(&v1, &r1);
    let old = r1.instances[0].id.clone();

    // Abandoned at the cutover (the manager's deadline dropped the call): two containers
    // of one replica run.
    assert!(abandon(&provider, &k1).await, "a fresh container started");
    assert_eq!(running(&scope).len(), 2);

    // A fresh provider (the managing process restarted) keeps the container the store knows.
    let fresh = common::provider().await;
    let recovered = fresh
        .recover(&OperationContext::detached(), std::slice::from_ref(&k1))
        .await
        .unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].status, ObservedStatus::Running);
    let adopted: Vec<String> = recovered[0]
        .runtime
        .instances
        .iter()
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(
        adopted,
        std::slice::from_ref(&old),
        "the known container is adopted"
    );
    assert!(same(&old, &running(&scope)), "exactly one serves");
    assert!(same(&old, &scope.containers()), "the other was removed");

    // Abandoned again; a new replace converges on one fresh container.
    assert!(abandon(&fresh, &k1).await);
    let r2 = fresh
        .replace(&OperationContext::detached(), &k1)
        .await
        .expect("replace after an abandoned one");
    assert_ne!(r2.instances[0].id, old);
    assert!(
        same(&r2.instances[0].id, &scope.containers()),
        "the old container and the leftover are gone: {:?}",
        scope.containers()
    );
}
