//! [`LocalProvider`](crate::LocalProvider)'s configuration and its builder.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use conan_core::{Error, Result};

/// Environment variables an app inherits from the manager by default: where programs
/// are, who and where it is, its language and time zone — and nothing that can carry a
/// credential or change what node runs. `NODE_OPTIONS` (`--require` any file),
/// `NODE_AUTH_TOKEN`, `NPM_TOKEN` and the like are *not* inherited (set them in the
/// config's `env`, or name them with [`LocalProviderBuilder::inherit_env`]); of the
/// `LC_*` variables only glibc's locale categories are, not any `LC_` name (ssh forwards
/// `LC_*` from the client, so they are a channel for arbitrary values). When the
/// deployment runs as another user (`provider_options.local.user`), `HOME`, `USER`,
/// `LOGNAME` and `SHELL` are that user's.
pub const DEFAULT_INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TERM",
    "LC_ALL",
    "LC_CTYPE",
    "LC_NUMERIC",
    "LC_TIME",
    "LC_COLLATE",
    "LC_MONETARY",
    "LC_MESSAGES",
    "LC_PAPER",
    "LC_NAME",
    "LC_ADDRESS",
    "LC_TELEPHONE",
    "LC_MEASUREMENT",
    "LC_IDENTIFICATION",
];

/// Settings of a local provider (see [`LocalProviderBuilder`]).
#[derive(Clone, Debug)]
pub struct LocalSettings {
    /// Where deployment state, spools and log files live.
    pub state_dir: PathBuf,
    /// Ports allocated to deployments without an explicit port.
    pub port_range: RangeInclusive<u16>,
    /// Where machine-wide port reservations are locked (every manager on the machine
    /// should use the same directory).
    pub port_lock_dir: PathBuf,
    /// The node binary (looked up on `PATH` when not a path).
    pub node_path: PathBuf,
    /// The value of `HOST` given to apps, and the address probed.
    pub host: String,
    /// In-memory log buffer per deployment, in bytes.
    pub log_memory_bytes: usize,
    /// Size at which the log file rotates.
    pub log_file_max_bytes: u64,
    /// Log files kept (current + rotated).
    pub log_files: u32,
    /// Extra variable names inherited from the manager's environment.
    pub inherit_env: Vec<String>,
    /// Inherit the manager's whole environment (PM2's behaviour) instead of the allowlist.
    pub inherit_all_env: bool,
    /// Put each instance in its own cgroup where the machine allows it (see
    /// [`LocalProviderBuilder::cgroups`]).
    pub cgroups: bool,
}

/// Builds a [`LocalProvider`](crate::LocalProvider).
///
/// ```no_run
/// # fn main() -> conan_core::Result<()> {
/// let provider = conan_provider_local::LocalProvider::builder()
///     .state_dir("/var/lib/conan/local")
///     .port_range(21000..=21999)
///     .node_path("/usr/bin/node")
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct LocalProviderBuilder {
    settings: LocalSettings,
}

impl Default for LocalProviderBuilder {
    fn default() -> Self {
        let state_dir = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir)
            .join("conan/local");
        Self {
            settings: LocalSettings {
                state_dir,
                port_range: 20000..=24999,
                port_lock_dir: crate::ports::MachineLocks::default_dir(),
                node_path: PathBuf::from("node"),
                host: "127.0.0.1".into(),
                log_memory_bytes: 8 * 1024 * 1024,
                log_file_max_bytes: 10 * 1024 * 1024,
                log_files: 5,
                inherit_env: Vec::new(),
                inherit_all_env: false,
                cgroups: true,
            },
        }
    }
}

impl LocalProviderBuilder {
    /// The state directory (default `$XDG_STATE_HOME/conan/local`, else
    /// `~/.local/state/conan/local`). Two managers sharing it adopt each other's apps.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.settings.state_dir = dir.into();
        self
    }

    /// Ports to allocate from (default 20000–24999: below Linux's ephemeral range
    /// 32768–60999, so an outgoing connection never holds a port handed to an app).
    pub fn port_range(mut self, range: RangeInclusive<u16>) -> Self {
        self.settings.port_range = range;
        self
    }

    /// Where ports are reserved machine-wide: a locked file per port in use, so managers
    /// sharing the directory never hand out the same port. The default is the user's own
    /// (`/run/conan/ports` for root, else `$XDG_RUNTIME_DIR/conan/ports`, else
    /// `$TMPDIR/conan-ports-<uid>`); a directory another user owns, or that group or
    /// others may write in, is refused (reservations are then process-wide only).
    pub fn port_lock_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.settings.port_lock_dir = dir.into();
        self
    }

    /// The node binary (default `node` on `PATH`).
    pub fn node_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.node_path = path.into();
        self
    }

    /// The `HOST` apps are told to listen on (default `127.0.0.1`).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.settings.host = host.into();
        self
    }

    /// The in-memory log buffer per deployment (default 8 MiB).
    pub fn log_memory_bytes(mut self, bytes: usize) -> Self {
        self.settings.log_memory_bytes = bytes;
        self
    }

    /// The log file rotation: size per file and number of files (default 10 MB × 5).
    pub fn log_rotation(mut self, max_bytes: u64, files: u32) -> Self {
        self.settings.log_file_max_bytes = max_bytes;
        self.settings.log_files = files.max(1);
        self
    }

    /// Also pass this variable of the manager's environment to apps.
    pub fn inherit_env(mut self, name: impl Into<String>) -> Self {
        self.settings.inherit_env.push(name.into());
        self
    }

    /// Pass the manager's whole environment to apps (PM2 does this; it leaks the
    /// manager's secrets into every app, hence not the default).
    pub fn inherit_all_env(mut self, yes: bool) -> Self {
        self.settings.inherit_all_env = yes;
        self
    }

    /// Whether each instance gets its own cgroup where the machine allows it (default
    /// `true`): it is then killed by its cgroup (nothing it forks escapes) and
    /// `resources.memory` / `resources.cpus` are hard limits. With `false` (or where no
    /// cgroup can be made) instances are tracked by process group, ancestry and the
    /// `CONAN_INSTANCE` marker, and limits are not enforced;
    /// [`LocalProvider::containment`](crate::LocalProvider::containment) says which applies.
    pub fn cgroups(mut self, enabled: bool) -> Self {
        self.settings.cgroups = enabled;
        self
    }

    /// Builds the provider, creating the state directory (and, with cgroups, finding
    /// the machine's cgroup hierarchies once per process).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an empty port range; [`Error::Provider`] when the state
    /// directory cannot be created.
    pub fn build(self) -> Result<crate::LocalProvider> {
        let s = self.settings;
        if s.port_range.is_empty() {
            return Err(Error::InvalidConfig {
                problems: vec![conan_core::ConfigProblem::new(
                    "port_range",
                    "the port range is empty",
                )],
            });
        }
        // Private (0700): it holds the apps' logs and specs, and its files are 0600 too.
        let private = |dir: &std::path::Path| {
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        };
        private(&s.state_dir)
            .and_then(|()| private(&s.state_dir.join("deployments")))
            .map_err(|e| {
                Error::provider_with_source(
                    "local",
                    format!("cannot create state directory {}", s.state_dir.display()),
                    false,
                    e,
                )
            })?;
        if s.cgroups {
            let _ = crate::cgroup::detect();
        }
        Ok(crate::LocalProvider::from_settings(s))
    }
}
