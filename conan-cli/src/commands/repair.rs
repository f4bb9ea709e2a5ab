//! `conan daemon repair`: rebuild what can be rebuilt of a damaged state database.
//!
//! The repair needs the database to itself: it stops a running daemon and holds the
//! daemon lock while it works (so no command auto-starts one meanwhile). Then:
//!
//! 1. opening the store restores `conan.db` from `conan.db.bak` when the file is damaged
//!    (the damaged file is kept beside it);
//! 2. [`SqliteStore::repair`] salvages rows with damaged parts and moves unreadable ones
//!    into the `quarantine` table (kept, with the error);
//! 3. deployments the database lost but the local provider's state directory still
//!    describes ([`LocalProvider::discover`](conan::local::LocalProvider::discover): the
//!    spec of their last revision and their last runtime) get their records back: `running`
//!    when an instance was recorded (recovery then adopts it, or marks it failed if it is
//!    gone), else `stopped`. A directory whose name is taken by another deployment in the
//!    database is left to recovery;
//! 4. a fresh backup of the repaired state is written.
//!
//! The next command starts a daemon, which recovers every deployment as usual (adopting
//! what still runs). Running the repair again finds nothing to do.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use conan::store::{
    DamagedRecord, DeploymentRecord, RevisionRecord, RevisionState, SqliteStore, StateRestore,
    StateStore, StatusChange,
};
use conan::{DeploymentStatus, KnownDeployment, OperationKind, Timestamp};
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
    /// Records re-created from what the local provider's state directory describes.
    recreated: Vec<Recreated>,
    /// Directories of the state directory left alone, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    left: Vec<String>,
    /// Deployments in the database after the repair.
    deployments: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup: Option<PathBuf>,
    /// Whether anything was changed.
    changed: bool,
}

/// A record re-created from the local provider's state directory.
#[derive(Debug, Serialize)]
struct Recreated {
    id: String,
    name: String,
    revision: u64,
    /// `running` (an instance was recorded; recovery adopts it) or `stopped`.
    status: String,
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
    let (recreated, left) = recreate_lost(home, &store).await?;
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

    let changed = !report.is_empty() || report.restore.is_some() || !recreated.is_empty();
    let out = RepairOutput {
        database,
        stopped_daemon: stopped.flatten(),
        restore: report.restore,
        salvaged: report.salvaged,
        quarantined: report.quarantined,
        recreated,
        left,
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

/// Re-creates the records of deployments the local provider's state directory describes
/// but the database does not know (see the module docs). Returns them, and what was left.
async fn recreate_lost(
    home: &Home,
    store: &SqliteStore,
) -> CliResult<(Vec<Recreated>, Vec<String>)> {
    let state_dir = home.local_state();
    let found: Vec<KnownDeployment> = crate::blocking::run(move || {
        conan::local::LocalProvider::builder()
            .state_dir(state_dir)
            .build()
            .map(|local| local.discover())
            .map_err(|e| CliError::failed(format!("cannot read the local state directory: {e}")))
    })
    .await?;
    let known = store
        .load_deployments()
        .await
        .map_err(|e| CliError::failed(format!("cannot read the state database: {e}")))?;
    let ids: HashSet<&str> = known.iter().map(|r| r.id.as_str()).collect();
    let mut names: HashSet<String> = known.iter().map(|r| r.name.to_string()).collect();
    let (mut recreated, mut left) = (Vec::new(), Vec::new());
    for found in found {
        let spec = &found.spec;
        if ids.contains(spec.id.as_str()) {
            continue;
        }
        if !names.insert(spec.config.name.clone()) {
            left.push(format!(
                "{} ({}): the name is taken by another deployment; recovery reconciles it",
                spec.id, spec.config.name
            ));
            continue;
        }
        let now = Timestamp::now();
        let status = if found.runtime.instances.is_empty() {
            DeploymentStatus::Stopped
        } else {
            DeploymentStatus::Running
        };
        let revision = RevisionRecord {
            deployment: spec.id.clone(),
            revision: spec.revision,
            config: spec.config.clone(),
            cause: OperationKind::Deploy,
            source_revision: None,
            state: RevisionState::Succeeded,
            created_at: now,
        };
        let record = DeploymentRecord {
            id: spec.id.clone(),
            name: spec.config.name.as_str().into(),
            provider: "local".into(),
            status: status.clone(),
            revision: spec.revision,
            config: spec.config.clone(),
            runtime: Some(found.runtime.clone()),
            last_failure: None,
            created_at: now,
            updated_at: now,
        };
        store
            .save_status_change(StatusChange {
                record: &record,
                revision: Some(&revision),
                audit: &[],
            })
            .await
            .map_err(|e| CliError::failed(format!("cannot re-create {}: {e}", spec.id)))?;
        recreated.push(Recreated {
            id: spec.id.to_string(),
            name: spec.config.name.clone(),
            revision: spec.revision.0,
            status: status.kind().to_string(),
        });
    }
    Ok((recreated, left))
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
    for r in &out.recreated {
        println!(
            "re-created   deployment {} ({}) at revision {}, {}: the database had lost it, its directory describes it",
            r.id, r.name, r.revision, r.status
        );
    }
    for l in &out.left {
        println!("left         {l}");
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
