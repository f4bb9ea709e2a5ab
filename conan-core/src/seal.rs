//! Env values sealed at rest (feature `seal`, on with `sqlite`).
//!
//! A config written to disk (the SQLite store's revisions, the local provider's
//! `spec.json`) keeps every field readable except `env`: its values are replaced by one
//! `env_sealed` string, `xc1:` followed by the hex of a random 24-byte nonce and the
//! XChaCha20-Poly1305 ciphertext of the env map (JSON). The 32-byte key lives in a file of
//! its own ([`EnvKey::load_or_create`], mode 0600), so a copied database, WAL or backup
//! holds no secret without it. A config without `env_sealed` (written before sealing) is
//! read as it is and sealed when next written.
//!
//! The key file is created once, atomically (written under a temporary name, then
//! hard-linked into place, so two processes starting together agree on one key), from
//! `/dev/urandom`. Losing it loses the env values of every stored revision: the rows that
//! hold them are then reported as damaged ([`StateStore::health`](crate::store::StateStore::health)),
//! the others load.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde_json::Value;

use crate::config::DeploymentConfig;
use crate::error::{Error, Result};

/// The field that replaces `env` in a sealed config.
pub const SEALED_FIELD: &str = "env_sealed";
const VERSION: &str = "xc1:";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// The key env values are sealed with. `Debug` never shows it.
#[derive(Clone)]
pub struct EnvKey {
    key: [u8; KEY_LEN],
    path: Option<PathBuf>,
}

impl fmt::Debug for EnvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn key_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::store(
        format!("env key {}: {what}", path.display()),
        false,
        Some(Box::new(e)),
    )
}

/// `n` bytes from the kernel's CSPRNG.
fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

impl EnvKey {
    /// Reads the key in `path`, or creates it (mode 0600, 32 random bytes) when missing.
    /// The file is opened without following a symlink; one that group or others can read
    /// or write is refused (its key may be known), as is one of the wrong length.
    ///
    /// # Errors
    /// [`Error::Store`] when the file cannot be read or created, or is refused.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        match Self::load(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(key_error(path, "cannot read it", e)),
            Ok(key) => return Ok(key),
        }
        let key: [u8; KEY_LEN] = random().map_err(|e| key_error(path, "no randomness", e))?;
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            path.file_name()
                .map_or_else(|| "key".into(), |n| n.to_string_lossy()),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&key)?;
            file.sync_all()
        };
        let made = write().and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        match made {
            Ok(()) => Ok(Self {
                key,
                path: Some(path.to_owned()),
            }),
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::load(path).map_err(|e| key_error(path, "cannot read it", e))
            }
            Err(e) => Err(key_error(path, "cannot create it", e)),
        }
    }

    fn load(path: &Path) -> std::io::Result<Self> {
        // Not through a symlink: the link itself is checked, then the file opened is
        // the one checked (a link swapped in between has another inode).
        let link = std::fs::symlink_metadata(path)?;
        if !link.file_type().is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a regular file (a symlink is not followed)",
            ));
        }
        let mut file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != (link.dev(), link.ino()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "replaced while being opened",
            ));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "mode {:o} lets others read it (expected 0600)",
                    meta.permissions().mode() & 0o777
                ),
            ));
        }
        let mut key = [0u8; KEY_LEN];
        let mut rest = Vec::new();
        file.read_exact(&mut key)?;
        file.read_to_end(&mut rest)?;
        if !rest.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a key (expected 32 bytes)",
            ));
        }
        Ok(Self {
            key,
            path: Some(path.to_owned()),
        })
    }

    /// A key from raw bytes (tests, or keys kept elsewhere).
    #[must_use]
    pub fn from_bytes(key: [u8; KEY_LEN]) -> Self {
        Self { key, path: None }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.key))
    }

    fn seal_bytes(&self, plain: &[u8]) -> Result<String> {
        let nonce: [u8; NONCE_LEN] = random().map_err(|e| {
            Error::store(
                "env values: no randomness for a nonce",
                false,
                Some(Box::new(e)),
            )
        })?;
        let sealed = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), plain)
            .map_err(|_| Error::store("env values: sealing failed", false, None))?;
        let mut text = String::with_capacity(VERSION.len() + 2 * (NONCE_LEN + sealed.len()));
        text.push_str(VERSION);
        hex_encode(&nonce, &mut text);
        hex_encode(&sealed, &mut text);
        Ok(text)
    }

    fn open_bytes(&self, text: &str) -> Result<Vec<u8>> {
        let bad = |why: &str| Error::store(format!("env values: {why}"), false, None);
        let hex = text
            .strip_prefix(VERSION)
            .ok_or_else(|| bad("sealed with an unknown scheme"))?;
        let bytes = hex_decode(hex).ok_or_else(|| bad("the sealed text is not hex"))?;
        if bytes.len() < NONCE_LEN {
            return Err(bad("the sealed text is too short"));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(XNonce::from_slice(nonce), sealed)
            .map_err(|_| {
                bad(&format!(
                    "cannot be opened with the key{} (the key file is not the one they were sealed with)",
                    self.path
                        .as_ref()
                        .map(|p| format!(" in {}", p.display()))
                        .unwrap_or_default()
                ))
            })
    }

    /// `config` as a JSON value whose `env` is replaced by `env_sealed` (no field when the
    /// config has no env).
    ///
    /// # Errors
    /// [`Error::Store`] when the config cannot be encoded or no nonce can be drawn.
    pub fn seal_config(&self, config: &DeploymentConfig) -> Result<Value> {
        let mut value = serde_json::to_value(config)
            .map_err(|e| Error::store("encoding a config as JSON", false, Some(Box::new(e))))?;
        if let Value::Object(fields) = &mut value
            && let Some(env) = fields.remove("env")
        {
            let plain = serde_json::to_vec(&env)
                .map_err(|e| Error::store("encoding env values", false, Some(Box::new(e))))?;
            fields.insert(
                SEALED_FIELD.to_owned(),
                Value::String(self.seal_bytes(&plain)?),
            );
        }
        Ok(value)
    }

    /// Puts the env values of a config value written by [`seal_config`](Self::seal_config)
    /// back in place (a value without `env_sealed` is left as it is).
    ///
    /// # Errors
    /// [`Error::Store`] when the sealed values cannot be opened with this key.
    pub fn open_config_value(&self, value: &mut Value) -> Result<()> {
        let Value::Object(fields) = value else {
            return Ok(());
        };
        let Some(sealed) = fields.remove(SEALED_FIELD) else {
            return Ok(());
        };
        let Value::String(text) = sealed else {
            return Err(Error::store(
                "env values: env_sealed is not a string",
                false,
                None,
            ));
        };
        let plain = self.open_bytes(&text)?;
        let env: Value = serde_json::from_slice(&plain).map_err(|e| {
            Error::store(
                "env values: decoding the opened values",
                false,
                Some(Box::new(e)),
            )
        })?;
        fields.insert("env".to_owned(), env);
        Ok(())
    }

    /// Decodes a config value written by [`seal_config`](Self::seal_config).
    ///
    /// # Errors
    /// [`Error::Store`] when the values cannot be opened or the config does not decode.
    pub fn open_config(&self, mut value: Value) -> Result<DeploymentConfig> {
        self.open_config_value(&mut value)?;
        serde_json::from_value(value)
            .map_err(|e| Error::store("decoding a config", false, Some(Box::new(e))))
    }
}

/// Removes `env_sealed` from a config value, for checking the rest of a sealed config
/// without the key.
pub fn strip_sealed(value: &mut Value) {
    if let Value::Object(fields) = value {
        fields.remove(SEALED_FIELD);
    }
}

fn hex_encode(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_config_hides_env_values_and_opens_with_its_key_only() {
        let mut config = DeploymentConfig::new("app");
        config.env.insert("API_TOKEN", "s3cr3t-value");
        let key = EnvKey::from_bytes([7; 32]);
        let value = key.seal_config(&config).unwrap();
        let text = value.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(!text.contains("\"env\""), "{text}");
        assert_eq!(key.open_config(value.clone()).unwrap(), config);
        let other = EnvKey::from_bytes([8; 32]);
        let e = other.open_config(value).unwrap_err().to_string();
        assert!(e.contains("cannot be opened"), "{e}");
        // A config written before sealing reads as it is.
        let plain = serde_json::to_value(&config).unwrap();
        assert_eq!(key.open_config(plain).unwrap(), config);
    }

    #[test]
    fn the_key_file_is_private_shared_and_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conan.key");
        let a = EnvKey::load_or_create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        let b = EnvKey::load_or_create(&path).unwrap();
        assert_eq!(a.key, b.key, "the second open reads the same key");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp left"
        );
        // A key others can read is refused, and a symlink is not followed.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = EnvKey::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("lets others read it"), "{e}");
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(EnvKey::load_or_create(&link).is_err());
    }
}
