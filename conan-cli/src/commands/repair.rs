//! `conan daemon repair`: rebuild what can be rebuilt of a damaged state database.
//!
//! The repair needs the database to itself: it stops a running daemon and holds the
//! daemon lock while it works (so no command auto-starts one meanwhile). Then:
//!
//! 1. opening the store restores `conan.db` from `conan.db.bak` when the file is damaged
//!    (the damaged file is kept beside it);
//! 2. [`SqliteStore::repair`] salvages rows with damaged parts and moves unreadable ones
//!    into the `quarantine` table (kept, with the error);
//! 3. a fresh backup of the repaired state is written.
//!
//! The next command starts a daemon, which recovers every deployment as usual (adopting
//! what still runs). Running the repair again finds nothing to do.

use std::path::PathBuf;
use std::sync::Arc;

use conan::store::{DamagedRecord, SqliteStore, StateRestore, StateStore};
use serde::Serialize;

use crate::daemon::lock::{DaemonLock, LockError};
use crate::error::{CliError, CliResult};
use crate::home::Home;
use crate::output;

/// What `conan daemon repair --json` prints.
#[derive(Debug, Serialize)]
struct RepairOutput {
    database: PathBuf,
    /// The pid of the daemon stopped first, if one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped_daemon: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restore: Option<StateRestore>,
    salvaged: Vec<DamagedRecord>,
    quarantined: Vec<DamagedRecord>,
    /// Deployments in the database after the repair.
    deployments: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup: Option<PathBuf>,
    /// Whether anything was changed.
    changed: bool,
}

/// `conan daemon repair`.
pub async fn repair(home: &Home, json: bool) -> CliResult {
    home.ensure()
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", home.root().display())))?;
    let stopped = super::daemon::stop_daemon(home).await?;
    if let (Some(pid), false) = (stopped, json) {
        let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        println!("stopped the Conan daemon{pid}; deployments keep running");
    }
    let _lock = match DaemonLock::acquire(&home.lock()) {
        Ok(lock) => lock,
        Err(LockError::Held(_)) => {
            return Err(CliError::failed(
                "a Conan daemon started again while the repair began; stop it and retry",
            ));
        }
        Err(LockError::Io(e)) => {
            return Err(CliError::failed(format!(
                "cannot lock {}: {e}",
                home.lock().display()
            )));
        }
    };
    let database = home.database();
    let path = database.clone();
    let store = crate::blocking::run(move || {
        SqliteStore::open(&path)
            .map(Arc::new)
            .map_err(|e| CliError::failed(format!("cannot open the state database: {e}")))
    })
    .await?;
    let fail = |what: &str, e: conan::Error| CliError::failed(format!("{what}: {e}"));
    let report = store
        .repair()
        .await
        .map_err(|e| fail("cannot repair the state database", e))?;
    let deployments = store
        .load_deployments()
        .await
        .map_err(|e| fail("cannot read the repaired database", e))?
        .len();
    let backup = {
        let store = store.clone();
        crate::blocking::run(move || {
            store
                .backup_now()
                .map_err(|e| CliError::failed(format!("cannot back up the repaired state: {e}")))
        })
        .await?
    };
    // Closing waits for the writer thread: on the blocking pool.
    crate::blocking::infallible((), move || drop(store)).await;

    let changed = !report.is_empty() || report.restore.is_some();
    let out = RepairOutput {
        database,
        stopped_daemon: stopped.flatten(),
        restore: report.restore,
        salvaged: report.salvaged,
        quarantined: report.quarantined,
        deployments,
        backup: Some(backup),
        changed,
    };
    if json {
        output::print_json(&out);
    } else {
        print(&out);
    }
    Ok(())
}

fn print(out: &RepairOutput) {
    if let Some(restore) = &out.restore {
        println!("restored     {}", restore.summary());
    }
    for d in &out.salvaged {
        println!("salvaged     {} {}{}: {}", d.kind, d.id, named(d), d.error);
    }
    for d in &out.quarantined {
        println!(
            "quarantined  {} {}{}: {} (kept in the quarantine table of {})",
            d.kind,
            d.id,
            named(d),
            d.error,
            out.database.display()
        );
    }
    if out.changed {
        println!(
            "repaired {}: {} deployment(s) managed; the next command starts the daemon, which recovers them",
            out.database.display(),
            out.deployments
        );
    } else {
        println!(
            "nothing to repair: {} is intact ({} deployment(s))",
            out.database.display(),
            out.deployments
        );
    }
    if let Some(backup) = &out.backup {
        println!("backup       {}", backup.display());
    }
}

fn named(d: &DamagedRecord) -> String {
    d.name
        .as_deref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default()
}
