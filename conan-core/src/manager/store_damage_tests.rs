//! Issue 10, finding 4, as the manager sees it: a damaged database is restored (and said
//! so) instead of starting empty, and one bad row does not stop the manager from starting.

use std::time::Duration;

use super::*;
use crate::store::SqliteStore;
use crate::testing::MemoryProvider;

async fn manager(provider: &MemoryProvider, path: &std::path::Path) -> DeploymentManager {
    DeploymentManager::builder()
        .provider(provider.clone())
        .store(SqliteStore::open(path).unwrap())
        .build()
        .await
        .expect("the manager starts")
}

async fn deploy_three(path: &std::path::Path) -> MemoryProvider {
    let p = MemoryProvider::new();
    let m = manager(&p, path).await;
    for name in ["a", "b", "c"] {
        m.deploy(DeploymentConfig::builder(name).build().unwrap())
            .await
            .unwrap();
    }
    m.shutdown().await;
    drop(m);
    // The backup after the writes (a running store takes it within a minute).
    SqliteStore::open(path).unwrap().backup_now().unwrap();
    p
}

fn names(m: &DeploymentManager) -> Vec<String> {
    m.list().iter().map(|r| r.name.to_string()).collect()
}

#[tokio::test]
async fn a_manager_on_a_truncated_database_gets_the_backup_back_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conan.db");
    let p = deploy_three(&path).await;
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);

    let m = manager(&p, &path).await;
    assert_eq!(names(&m), ["a", "b", "c"], "not a silent empty start");
    let health = m.store_health();
    assert!(health.restore.is_some(), "{health:?}");
    let reconciled = tokio::time::timeout(Duration::from_secs(10), m.recover())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reconciled.len(), 3);
}

#[tokio::test]
async fn one_bad_row_does_not_stop_the_manager_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conan.db");
    let p = deploy_three(&path).await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "UPDATE revisions SET config = '{\"name\": 12' WHERE deployment = (SELECT id FROM deployments WHERE name = 'b')",
    )
    .unwrap();
    drop(conn);

    let m = manager(&p, &path).await;
    assert_eq!(names(&m), ["a", "c"]);
    let damaged = m.store_health().damaged;
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!(damaged[0].name.as_deref(), Some("b"));
    assert!(damaged[0].error.contains("config"), "{damaged:?}");
}
