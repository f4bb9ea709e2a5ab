//! # conan-cli: the `conan` command and its daemon
//!
//! `conan` deploys apps and keeps them running through a small background daemon that owns
//! a [`DeploymentManager`](conan::DeploymentManager): the local provider (supervised
//! processes), the Docker provider (when a Docker daemon answers at start) and the SQLite
//! store, all in `CONAN_HOME`.
//!
//! ```text
//! conan deploy examples/apps/hello --health /health
//! conan ls
//! conan logs -f hello
//! conan stop hello && conan rm hello
//! ```
//!
//! ## `CONAN_HOME`
//!
//! `CONAN_HOME`, else `$XDG_STATE_HOME/conan`, else `~/.local/state/conan` (mode 0700):
//!
//! | file | what |
//! |---|---|
//! | `conan.sock` | the daemon's HTTP + JSON API (mode 0600) |
//! | `daemon.lock` | `flock`ed by the running daemon, holds its pid: one daemon per home |
//! | `daemon.log` | the daemon's log when auto-started (`CONAN_LOG=debug` for more) |
//! | `conan.db` | deployments, revisions, audit log, alert outbox and firing alerts (SQLite, WAL) |
//! | `local/` | the local provider's spools, app logs and adoption records |
//!
//! ## The daemon
//!
//! Every command but `init` and `daemon` starts a daemon in the background when none
//! answers (a double fork through `conan daemon --background`, logging to `daemon.log`).
//! `conan daemon` runs one in the foreground; a second one on the same home says so and
//! exits 1. `conan daemon stop` stops the daemon, not the deployments: the next daemon
//! [`recover`](conan::DeploymentManager::recover)s them (same pids, same containers). The
//! daemon runs on one thread (a current-thread Tokio runtime) and keeps blocking work (files,
//! the log) off it; it never logs env values.
//!
//! Docker is optional: when no Docker daemon answers at start, only `local` is registered;
//! the daemon tries Docker again every 10 s (`CONAN_DOCKER_RETRY_MS`) and adds the Docker
//! provider once it answers, adopting the containers of its deployments. Until then
//! `conan deploy --provider docker` fails, says why Docker is unreachable and which setting
//! names the Docker daemon (`DOCKER_HOST`). The Docker provider reads `DOCKER_HOST` and
//! `CONAN_DOCKER_BASE_IMAGE` (base image of generated Dockerfiles).
//!
//! ## Environment
//!
//! | variable | effect |
//! |---|---|
//! | `CONAN_HOME` | see above |
//! | `CONAN_LOG` | the daemon's log filter (`info`; `debug`, `conan_core=trace`, ...) |
//! | `CONAN_PORT_RANGE` | ports the local provider allocates from (`20000-24999`) |
//! | `CONAN_LOCAL_CGROUPS` | `off`: no cgroup per local instance, process markers instead (`on`; `conan daemon status` shows which is in force) |
//! | `CONAN_DOCKER_BASE_IMAGE` | base image of generated Dockerfiles (`node:20-slim`) |
//! | `DOCKER_HOST` | the Docker daemon (`unix:///var/run/docker.sock`) |
//! | `CONAN_DOCKER_RETRY_MS` | how often the daemon tries an unavailable Docker again (`10000`) |
//! | `NO_COLOR` | no colour even on a terminal |
//!
//! The daemon reads its variables when it starts (auto-start passes the command's
//! environment on).
//!
//! ## The API
//!
//! HTTP/1.1 on the Unix socket; JSON bodies; the field names are those of the CLI's
//! `--json` output (types in [`api`]) and are stable. Try it with
//! `curl --unix-socket ~/.local/state/conan/conan.sock http://conan/v1/deployments`.
//!
//! | method and path | does | answers |
//! |---|---|---|
//! | `GET /v1/daemon` | daemon info | [`api::DaemonInfo`] |
//! | `POST /v1/daemon/shutdown` | stop the daemon (deployments keep running) | `{"stopping":true}` |
//! | `GET /v1/deployments` | list | `[`[`api::DeploymentView`]`]` |
//! | `POST /v1/deployments` | deploy; body: a `DeploymentConfig` (JSON) | view, or progress stream |
//! | `GET /v1/deployments/{name}` | status, health, metrics | [`api::StatusView`] |
//! | `DELETE /v1/deployments/{name}?force=1` | remove (`force`: even while running) | view |
//! | `POST /v1/deployments/{name}/stop` (`start`, `restart`) | lifecycle | view |
//! | `POST /v1/deployments/{name}/update` | new revision; body [`api::UpdateBody`] | view |
//! | `POST /v1/deployments/{name}/rollback` | body [`api::RollbackBody`] | view |
//! | `GET /v1/deployments/{name}/history` | revisions | `[`[`api::RevisionView`]`]` |
//! | `GET /v1/deployments/{name}/logs` | `tail`, `since`, `until` (RFC 3339), `level`, `grep`, `stream` (`stdout`/`stderr`), `follow=1` | NDJSON of `LogLine` |
//! | `GET /v1/deployments/{name}/metrics` | metrics history: `since` (a duration ago, up to `24h`; `1h`), `step` (a duration; each sample) | [`api::metrics::MetricsView`] |
//! | `GET /v1/deployments/{name}/monitor` | `monitor_deployment`: current values and recent series; `metrics` (`cpu,memory,network,health,restarts,requests`; all), `interval` (`5s`; 100ms to 1h), `window` (`10m`; up to 24h), `follow=1` | `conan::monitor::watch::Monitoring`, or NDJSON of them every interval |
//! | `GET /v1/events?deployment=NAME` | live events until the client leaves | NDJSON of `EventEnvelope` |
//! | `GET /v1/audit?limit=N&deployment=NAME` | the audit log, newest `N` (100) | `[AuditEntry]` |
//! | `GET /v1/alerts` | alerts firing now, notifications waiting in the outbox (oldest 100) | [`api::AlertsView`] |
//!
//! `{name}` is a name or an id. Operations wait for their outcome; with `?progress=1` they
//! answer `application/x-ndjson` instead: one [`api::ProgressLine`] per line — `{"event":…}`
//! for each event about the deployment, then one `{"result": view}` or `{"error": …}`.
//! A client that disconnects does not cancel the operation, unless it also asked
//! `cancel_on_close=1` (what `conan mcp` does, so an agent's cancellation reaches the
//! operation). A request may name who asks in the `x-conan-requested-by` header
//! (`mcp:claude-desktop 1.2`): the operation's audit entry records it (`conan events`
//! shows `(by ...)`). Errors are [`api::ApiError`]
//! (`code`, `message` ending with its causes, `causes` — the underlying errors, the OS
//! error last —, `hint`, `problems` with field paths, the `failure` bundle) with a 4xx/5xx
//! status. A request whose head does not arrive within 2 s is closed, one whose body does
//! not arrive within 10 s is answered `408`; responses are not timed (see
//! [`daemon::server`] for these limits and the connection cap).
//!
//! ## Update semantics
//!
//! `conan update NAME` re-rolls the current config; `--env K=V` sets variables (the others
//! keep their values); `PATH` with a `conan.toml` replaces the config (name, provider and
//! env carry over unless the file sets them); `PATH` without one only changes the source.
//!
//! ## Exit codes
//!
//! 0 success; 1 the operation failed (the message says why, the failure bundle shows exit
//! status, last probe and last log lines); 2 bad usage or an invalid config (every problem
//! with its field path).

pub mod api;
mod blocking;
mod cli;
mod client;
mod commands;
pub mod daemon;
mod error;
pub mod home;
mod launch;
mod output;
mod project;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::error::CliError;
use crate::output::{Color, Style};

/// The `conan` command: parses the arguments, runs, prints errors, returns the exit code.
#[must_use]
pub fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = cli::Cli::parse();
    let json = cli.command.wants_json();
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&e, json);
            e.exit_code()
        }
    }
}

/// A reader that went away (`conan events | head -1`) ends the command quietly, with exit
/// 0, as it would with SIGPIPE's default action (which Rust programs ignore).
///
/// Output goes through `println!`, which panics when stdout's write fails; the panic it
/// raises for a closed pipe (`failed printing to stdout: Broken pipe`) exits here instead
/// of printing a backtrace. Every other panic keeps the default report.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if is_broken_pipe_panic(message) {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Whether a panic message is std's for a print to a closed stdout or stderr.
fn is_broken_pipe_panic(message: &str) -> bool {
    // EPIPE is 32 on Linux, the only system Conan runs on.
    (message.starts_with("failed printing to stdout")
        || message.starts_with("failed printing to stderr"))
        && message.contains("(os error 32)")
}

fn print_error(e: &CliError, json: bool) {
    if json {
        let api = e.api.as_deref().cloned().unwrap_or_else(|| {
            let mut api = api::ApiError::new("failed", e.message.clone());
            api.hint.clone_from(&e.hint);
            api
        });
        output::print_json(&serde_json::json!({ "error": api }));
    }
    let style = Style::stderr();
    // The message and the failure bundle quote the app (its log lines, its exit reason):
    // escaped on a terminal, as `conan logs` does.
    let tty = std::io::stderr().is_terminal();
    let safe = |text: &str| output::escape::for_output(text, tty).into_owned();
    eprintln!("{} {}", style.paint(Color::Red, "error:"), safe(&e.message));
    for line in &e.details {
        eprintln!("{}", safe(line));
    }
    if let Some(hint) = &e.hint {
        eprintln!("{} {}", style.paint(Color::Yellow, "hint:"), safe(hint));
    }
}
