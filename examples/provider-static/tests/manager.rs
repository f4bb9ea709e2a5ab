//! The static provider under a real `DeploymentManager`: deploy, update, stop, start and
//! remove, checked over HTTP.

mod common;

use std::time::Duration;

use conan_core::testing::wait_until;
use conan_core::{DeploymentManager, DeploymentRecord, DeploymentStatus, RetryPolicy};
use conan_provider_static::{StaticProvider, live_listeners};

use common::{INDEX, Site, fetch};

fn port(record: &DeploymentRecord) -> u16 {
    record
        .runtime
        .as_ref()
        .and_then(|r| r.port())
        .expect("a running deployment has a port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_update_stop_start_remove_through_the_manager() {
    let (one, two) = (Site::new(), Site::new());
    std::fs::write(two.root().join("index.html"), "version two\n").expect("write");
    let manager = DeploymentManager::builder()
        .provider(StaticProvider::new())
        .retry(RetryPolicy::none())
        .build()
        .await
        .expect("manager");
    let name = format!("site-{:08x}", std::process::id());

    let record = manager
        .deploy(common::config(&name, &one.root()))
        .await
        .expect("deploy");
    assert_eq!(record.status, DeploymentStatus::Running);
    let first_port = port(&record);
    assert_eq!(fetch(first_port, "/").await.2, INDEX.as_bytes());

    let record = manager
        .update(&name, common::config(&name, &two.root()))
        .await
        .expect("update");
    assert_eq!(record.status, DeploymentStatus::Running);
    assert_eq!(record.revision.0, 2);
    let second_port = port(&record);
    assert_eq!(fetch(second_port, "/").await.2, b"version two\n");
    assert_eq!(
        live_listeners(&record.id).len(),
        1,
        "the old revision stopped"
    );

    // A failing update (its directory is missing) leaves revision 2 serving.
    let failed = manager
        .update(&name, common::failing_config(&name, &two.root()))
        .await;
    assert!(failed.is_err());
    let record = manager.get(&name).expect("record");
    assert_eq!(record.status, DeploymentStatus::Running);
    assert_eq!(fetch(second_port, "/").await.2, b"version two\n");

    let record = manager.stop(&name).await.expect("stop");
    assert_eq!(record.status, DeploymentStatus::Stopped);
    let closed = wait_until(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", second_port))
            .await
            .is_err()
    })
    .await;
    assert!(closed, "a stopped deployment serves nothing");

    let record = manager.start(&name).await.expect("start");
    assert_eq!(record.status, DeploymentStatus::Running);
    assert_eq!(record.revision.0, 2);
    assert_eq!(fetch(port(&record), "/").await.2, b"version two\n");

    let id = record.id.clone();
    manager.remove(&name).await.expect("remove");
    assert!(live_listeners(&id).is_empty(), "nothing is left bound");
    manager.shutdown().await;
}
