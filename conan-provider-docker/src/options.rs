//! `provider_options.docker`: what only the Docker provider reads from a deployment config.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[provider_options.docker]` table of a [`DeploymentConfig`](conan_core::DeploymentConfig),
/// decoded with `config.provider_options_for::<DockerOptions>("docker")`.
///
/// ```toml
/// [provider_options.docker]
/// image = "registry.example/app:1.4"   # run this image instead of building one
/// dockerfile = "Dockerfile.prod"       # or build this Dockerfile (relative to `source`)
/// base_image = "node:22-slim"          # base of the generated Dockerfile for Node projects
/// host_port = 8080                     # publish on this host port instead of a daemon-chosen one
/// network = "backend"                  # attach to this network (created when missing)
/// volumes = ["data:/app/data", "/srv/cfg:/app/cfg:ro"]
/// keep_images = 3                      # images kept per deployment for rollback
/// keep_images_on_remove = false
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerOptions {
    /// An image that exists on the daemon; no build happens. It is never pulled: pull it
    /// first (`docker pull`) when it comes from a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The Dockerfile to build, relative to the source directory (default `Dockerfile` when
    /// that file exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<PathBuf>,
    /// Base image of the generated Dockerfile (overrides the provider's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    /// Host port to publish on (on the provider's bind address). Without it the daemon picks
    /// a free one. A fixed port cannot be shared by two containers, so `replicas` must be 1
    /// and updates fall back to `recreate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// A user-defined network to attach the containers to; created (labelled
    /// `conan.managed=true`) when missing and never deleted by Conan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Bind mounts and named volumes in Docker's `source:target[:ro]` form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Build arguments (`--build-arg`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build_args: BTreeMap<String, String>,
    /// How many revision images of the deployment to keep for rollback (default: the
    /// provider's, 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_images: Option<usize>,
    /// Keep the deployment's images when it is removed (default false: they are deleted).
    #[serde(default)]
    pub keep_images_on_remove: bool,
}
