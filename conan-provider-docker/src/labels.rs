//! The labels Conan puts on containers and images, and the filters that find them again.

use std::collections::HashMap;

use conan_core::DeploymentSpec;

/// `true` on everything Conan created.
pub const LABEL_MANAGED: &str = "conan.managed";
/// The deployment id.
pub const LABEL_DEPLOYMENT: &str = "conan.deployment";
/// The deployment name.
pub const LABEL_NAME: &str = "conan.name";
/// The revision number.
pub const LABEL_REVISION: &str = "conan.revision";
/// The replica index (0-based).
pub const LABEL_REPLICA: &str = "conan.replica";
/// The app's port inside the container.
pub const LABEL_PORT: &str = "conan.port";

/// The labels of `spec`'s images: the config's labels, then Conan's (which win).
pub(crate) fn image_labels(spec: &DeploymentSpec) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = spec
        .config
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels.insert(LABEL_DEPLOYMENT.into(), spec.id.to_string());
    labels.insert(LABEL_NAME.into(), spec.name().to_owned());
    labels.insert(LABEL_REVISION.into(), spec.revision.0.to_string());
    labels
}

/// The labels of one container of `spec`.
pub(crate) fn container_labels(
    spec: &DeploymentSpec,
    replica: u32,
    port: u16,
) -> HashMap<String, String> {
    let mut labels = image_labels(spec);
    labels.insert(LABEL_REPLICA.into(), replica.to_string());
    labels.insert(LABEL_PORT.into(), port.to_string());
    labels
}

/// A `label=` filter for list calls.
pub(crate) fn label_filter(pairs: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    let values = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    HashMap::from([("label".to_owned(), values)])
}

/// The image repository of a deployment name.
pub(crate) fn image_repo(name: &str) -> String {
    format!("conan/{name}")
}

/// The image tag of one revision.
pub(crate) fn image_tag(spec: &DeploymentSpec) -> String {
    format!("{}:r{}", image_repo(spec.name()), spec.revision.0)
}
