//! The command line (clap derive). Names and flags are a contract: scripts rely on them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Deploy apps to local processes or Docker and keep them healthy.
#[derive(Debug, Parser)]
#[command(name = "conan", version, about, propagate_version = true)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Where to deploy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProviderArg {
    /// Supervised local processes.
    Local,
    /// Docker containers.
    Docker,
}

impl ProviderArg {
    /// The provider's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderArg::Local => "local",
            ProviderArg::Docker => "docker",
        }
    }
}

/// How an update replaces the running revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// Stop the old revision, then start the new one.
    Recreate,
    /// Start the new one beside the old, switch when healthy.
    BlueGreen,
    /// Replace replicas a few at a time.
    Rolling,
    /// Route a growing share to the new revision, promoted or rolled back by its numbers.
    Canary,
}

impl From<StrategyArg> for conan::UpdateStrategy {
    fn from(s: StrategyArg) -> Self {
        match s {
            StrategyArg::Recreate => conan::UpdateStrategy::Recreate,
            StrategyArg::BlueGreen => conan::UpdateStrategy::BlueGreen,
            StrategyArg::Rolling => conan::UpdateStrategy::Rolling,
            StrategyArg::Canary => conan::UpdateStrategy::Canary,
        }
    }
}

/// `--json`.
#[derive(Clone, Copy, Debug, Args)]
pub struct JsonFlag {
    /// Print JSON with stable field names instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Every command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy an app directory and wait until it runs (or fails).
    Deploy {
        /// The app's directory, or its conan.toml (default: the current directory).
        path: Option<PathBuf>,
        /// The deployment's name (default: conan.toml's, else the directory's name).
        #[arg(long)]
        name: Option<String>,
        /// Where to run it (default: local).
        #[arg(long, value_enum)]
        provider: Option<ProviderArg>,
        /// The port the app listens on (default: a free one).
        #[arg(long)]
        port: Option<u16>,
        /// Set an env variable (repeatable); a bare NAME takes its value from this shell.
        #[arg(long = "env", short = 'e', value_name = "K=V")]
        env: Vec<String>,
        /// The start command (default: package.json's start script, main, or app.js...).
        #[arg(long = "start", value_name = "CMD")]
        start: Option<String>,
        /// An HTTP path that answers 2xx when the app is healthy (e.g. /health).
        #[arg(long = "health", value_name = "PATH")]
        health: Option<String>,
        /// How many instances to run, each on its own port (default 1).
        #[arg(long, value_name = "N")]
        replicas: Option<u32>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List deployments.
    #[command(visible_alias = "list")]
    Ls {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one deployment: status, health, revision, restarts, pid, URL, CPU, memory.
    Status {
        /// Name or id.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show (or follow) a deployment's logs.
    Logs(LogsArgs),
    /// Show a deployment's CPU, memory and network over time (sampled by the daemon).
    Metrics {
        /// Name or id.
        name: String,
        /// How far back: 10m, 1h, up to 24h (default 1h).
        #[arg(long, value_name = "D")]
        since: Option<String>,
        /// The width of a row: 10s, 1m, 5m (default: a sixtieth of --since, at least 1m;
        /// beyond the last hour, a multiple of 5m).
        #[arg(long, value_name = "D")]
        step: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Stop a deployment (it stays listed; `conan start` starts it again).
    Stop {
        /// Name or id.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Start a stopped or failed deployment.
    Start {
        /// Name or id.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Hold new requests at the deployment's endpoint (while you migrate or replace
    /// something); `conan resume` releases them. Requests in flight go on.
    Pause {
        /// Name or id.
        name: String,
        /// How long each held request waits before it gets a 503.
        #[arg(long, value_name = "D", default_value = "30s")]
        timeout: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Release the requests `conan pause` holds.
    Resume {
        /// Name or id.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Maintenance mode: the endpoint answers every request 503 with a notice.
    Maintenance {
        /// Name or id.
        name: String,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// The body of the 503 answers (HTML when it starts with `<`).
        #[arg(long, value_name = "TEXT")]
        body: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Run another number of replicas of the serving revision (no new revision): started
    /// beside the serving ones behind their health gate, or drained and stopped. With
    /// `replicas = { min, max, .. }` the count stays within the range, and the autoscaler
    /// moves it on from there.
    Scale {
        /// Name or id.
        name: String,
        /// The number of replicas.
        replicas: u32,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Stop and start a deployment.
    Restart {
        /// Name or id.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a deployment (stop it first, or use --force).
    #[command(visible_alias = "remove")]
    Rm {
        /// Name or id.
        name: String,
        /// Remove it even while it runs.
        #[arg(long, short = 'f')]
        force: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Roll out a new revision: the directory (and its conan.toml) again, or new env values.
    Update {
        /// Name or id.
        name: String,
        /// The app's directory (default: the deployment's current one, config unchanged).
        path: Option<PathBuf>,
        /// Set an env variable (repeatable); other variables keep their values.
        #[arg(long = "env", short = 'e', value_name = "K=V")]
        env: Vec<String>,
        /// How the new revision replaces the old (default: the config's, blue-green).
        #[arg(long, value_enum)]
        strategy: Option<StrategyArg>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Roll an earlier revision's config out again (default: the last good one).
    Rollback {
        /// Name or id.
        name: String,
        /// The revision to go back to.
        #[arg(long = "to", value_name = "REVISION")]
        to: Option<u64>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List a deployment's revisions.
    History {
        /// Name or id.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show recent operations and status changes; -f follows live events.
    Events {
        /// Follow live events.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// A live full-screen view of every deployment: status, health, restarts, CPU and
    /// memory with their recent history, uptime, URL, and the selected one's logs;
    /// restart, stop or start it from there (`?` lists the keys, `q` quits).
    Monit,
    /// Serve the agent tools (deploy, monitor, update, stop, list, logs, remove) over the
    /// Model Context Protocol on stdin/stdout, for an MCP client such as an AI assistant.
    Mcp,
    /// List the alerts that fire now and the notifications waiting for delivery.
    Alerts {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Write a commented starter conan.toml.
    Init {
        /// The app's directory (default: the current directory).
        path: Option<PathBuf>,
    },
    /// Docker helpers.
    Docker {
        #[command(subcommand)]
        action: DockerAction,
    },
    /// Run the daemon in the foreground, or control it.
    Daemon {
        /// What to do (default: run in the foreground).
        #[command(subcommand)]
        action: Option<DaemonAction>,
        /// Detach into a new session and run the daemon there (used by auto-start).
        #[arg(long, hide = true)]
        background: bool,
    },
}

/// `conan daemon ...`.
#[derive(Debug, Subcommand)]
pub enum DaemonAction {
    /// Stop the daemon; deployments keep running and the next daemon adopts them.
    Stop,
    /// Show whether a daemon runs, its pid and providers.
    Status {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Rebuild what can be rebuilt of a damaged state database: restore it from its backup,
    /// salvage or quarantine unreadable rows, and re-create records of deployments the
    /// database lost that still run. Stops a running daemon first; safe to run twice.
    Repair {
        #[command(flatten)]
        json: JsonFlag,
    },
}

/// `conan docker ...`.
#[derive(Debug, Subcommand)]
pub enum DockerAction {
    /// Build a Node.js base image from this machine's node (no registry needed): node, the
    /// libraries it links and a static busybox, imported into the Docker daemon. Sets it
    /// as `docker.base_image` in CONAN_HOME/daemon.toml unless that names one already.
    BaseImage {
        /// The image's tag.
        #[arg(long, default_value = "conan-local/node:20")]
        tag: String,
        /// The node binary to copy.
        #[arg(long, default_value = "/usr/bin/node")]
        node: PathBuf,
    },
}

/// `conan logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Names or ids; with more than one (or --all, --label) the lines of all of them,
    /// merged by time and prefixed with the deployment's name.
    #[arg(value_name = "NAME", required_unless_present_any = ["all", "label"])]
    pub names: Vec<String>,
    /// Every deployment's lines, merged.
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
    /// Only deployments with this label (KEY=VALUE; repeat to require several).
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Show the last N lines (default 100; 0 with -f: only new lines).
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<usize>,
    /// Keep printing new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines after this: a duration ago (10m, 2h) or an RFC 3339 time.
    #[arg(long, value_name = "D")]
    pub since: Option<String>,
    /// Only lines before this: a duration ago or an RFC 3339 time.
    #[arg(long, value_name = "D")]
    pub until: Option<String>,
    /// Only lines at this level or above (debug, info, warn, error).
    #[arg(long, value_name = "L")]
    pub level: Option<String>,
    /// Only lines containing this text.
    #[arg(long, value_name = "TEXT")]
    pub grep: Option<String>,
    /// Only the app's stdout.
    #[arg(long, conflicts_with = "stderr")]
    pub stdout: bool,
    /// Only the app's stderr.
    #[arg(long)]
    pub stderr: bool,
    /// Write the lines as the app wrote them, terminal escapes included (by default, on a
    /// terminal, control characters are shown as `^[`, `^G`, ...; pipes, files and
    /// `--json` always get them as written).
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

impl Command {
    /// Whether the command asked for JSON output (errors are then printed as JSON too).
    #[must_use]
    pub fn wants_json(&self) -> bool {
        match self {
            Command::Deploy { json, .. }
            | Command::Ls { json }
            | Command::Status { json, .. }
            | Command::Metrics { json, .. }
            | Command::Stop { json, .. }
            | Command::Start { json, .. }
            | Command::Restart { json, .. }
            | Command::Pause { json, .. }
            | Command::Resume { json, .. }
            | Command::Maintenance { json, .. }
            | Command::Rm { json, .. }
            | Command::Update { json, .. }
            | Command::Rollback { json, .. }
            | Command::Scale { json, .. }
            | Command::History { json, .. }
            | Command::Events { json, .. }
            | Command::Alerts { json } => json.json,
            Command::Logs(args) => args.json.json,
            Command::Daemon {
                action: Some(DaemonAction::Status { json } | DaemonAction::Repair { json }),
                ..
            } => json.json,
            Command::Init { .. }
            | Command::Monit
            | Command::Mcp
            | Command::Docker { .. }
            | Command::Daemon { .. } => false,
        }
    }
}
