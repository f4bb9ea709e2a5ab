//! `CONAN_HOME`: where the daemon keeps its socket, lock, database, log and app state.
//!
//! Resolved from `CONAN_HOME`, else `$XDG_STATE_HOME/conan`, else `~/.local/state/conan`.
//! The directory is created with mode 0700, so only its owner can reach the socket.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The files of one `CONAN_HOME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home the environment names (see the module docs).
    ///
    /// # Errors
    /// When none of `CONAN_HOME`, `XDG_STATE_HOME` and `HOME` is set.
    pub fn from_env() -> io::Result<Self> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let root = if let Some(home) = var("CONAN_HOME") {
            PathBuf::from(home)
        } else if let Some(state) = var("XDG_STATE_HOME") {
            PathBuf::from(state).join("conan")
        } else if let Some(home) = var("HOME") {
            PathBuf::from(home).join(".local/state/conan")
        } else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "cannot find a home for Conan: set CONAN_HOME (or HOME)",
            ));
        };
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()?.join(root)
        };
        Ok(Self { root })
    }

    /// A home at `root`.
    #[must_use]
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates the directory (mode 0700) if needed and tightens its mode if it exists.
    ///
    /// # Errors
    /// IO errors creating it.
    pub fn ensure(&self) -> io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
    }

    /// The directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The daemon's Unix socket.
    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.root.join("conan.sock")
    }

    /// The lock file held by the running daemon (it contains its pid).
    #[must_use]
    pub fn lock(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }

    /// The daemon's log when started in the background.
    #[must_use]
    pub fn log(&self) -> PathBuf {
        self.root.join("daemon.log")
    }

    /// The daemon settings file (`daemon.toml`).
    #[must_use]
    pub fn settings(&self) -> PathBuf {
        self.root.join("daemon.toml")
    }

    /// The SQLite database.
    #[must_use]
    pub fn database(&self) -> PathBuf {
        self.root.join("conan.db")
    }

    /// The local provider's state directory (spools, logs, adoption records).
    #[must_use]
    pub fn local_state(&self) -> PathBuf {
        self.root.join("local")
    }
}
