//! Images: where a revision's image comes from, building it, and pruning old ones.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::Docker;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
    TagImageOptionsBuilder,
};
use conan_core::{
    ConfigProblem, DeploymentSpec, Error, LogLine, OperationContext, OutputStream, Phase,
};
use futures::StreamExt;

use crate::context::{self, ExtraFile};
use crate::error::DockerError;
use crate::labels;
use crate::node::{self, GENERATED_DOCKERFILE};
use crate::{DockerOptions, PROVIDER_NAME};

/// The image of one revision.
#[derive(Clone, Debug)]
pub(crate) struct PreparedImage {
    /// `conan/<name>:r<revision>`.
    pub(crate) tag: String,
    /// `sh -c` command for the container, when the image's own CMD is not the one to run.
    pub(crate) command: Option<String>,
    /// Build output, for the deployment's logs.
    pub(crate) build_log: Vec<LogLine>,
}

/// The `sh -c` command containers of `spec` run, without building anything (for adopted
/// deployments): the config's, else the derived Node command when the image is generated.
pub(crate) fn command_for(spec: &DeploymentSpec, options: &DockerOptions) -> Option<String> {
    let config = &spec.config;
    if config.start_command.is_some() || options.image.is_some() || options.dockerfile.is_some() {
        return config.start_command.clone();
    }
    if config.source.join("Dockerfile").is_file() {
        return None;
    }
    node::start_command(config, &config.source).ok()
}

/// Lines of build output kept for a failure message.
const FAILURE_OUTPUT_LINES: usize = 20;

/// Resolves, builds or tags the image of `spec`.
pub(crate) async fn prepare(
    docker: &Docker,
    base_image: &str,
    ctx: &OperationContext,
    spec: &DeploymentSpec,
    options: &DockerOptions,
) -> conan_core::Result<PreparedImage> {
    let tag = labels::image_tag(spec);
    let config = &spec.config;
    if let Some(image) = &options.image {
        ctx.events
            .progress(&spec.id, Phase::Preparing, format!("using image {image}"));
        if let Err(e) = docker.inspect_image(image).await {
            let err = DockerError::api(format!("inspect image {image}"), e);
            if err.is_not_found() {
                return Err(Error::provider(
                    PROVIDER_NAME,
                    format!(
                        "image '{image}' does not exist on the Docker daemon (Conan does not pull): \
                         run `docker pull {image}` or build it first"
                    ),
                    false,
                ));
            }
            return Err(err.into());
        }
        let (repo, version) = tag.rsplit_once(':').unwrap_or((tag.as_str(), "latest"));
        let tag_options = TagImageOptionsBuilder::new()
            .repo(repo)
            .tag(version)
            .build();
        docker
            .tag_image(image, Some(tag_options))
            .await
            .map_err(|e| DockerError::api(format!("tag image {image} as {tag}"), e))?;
        return Ok(PreparedImage {
            tag,
            command: config.start_command.clone(),
            build_log: Vec::new(),
        });
    }

    // Idempotent by revision: an image an earlier attempt built for this very revision
    // of this deployment is used again.
    if let Ok(existing) = docker.inspect_image(&tag).await
        && existing
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(labels::LABEL_DEPLOYMENT))
            .is_some_and(|d| d == spec.id.as_str())
    {
        ctx.events.progress(
            &spec.id,
            Phase::Preparing,
            format!("using {tag}, built earlier"),
        );
        return Ok(PreparedImage {
            tag,
            command: command_for(spec, options),
            build_log: Vec::new(),
        });
    }

    let source = config.source.clone();
    if !source.is_dir() {
        return Err(Error::InvalidConfig {
            problems: vec![ConfigProblem::new(
                "source",
                format!("'{}' is not a directory", source.display()),
            )],
        });
    }
    let dockerfile: Option<PathBuf> = match &options.dockerfile {
        Some(path) => {
            if !source.join(path).is_file() {
                return Err(Error::InvalidConfig {
                    problems: vec![ConfigProblem::new(
                        "provider_options.docker.dockerfile",
                        format!("'{}' not found in '{}'", path.display(), source.display()),
                    )],
                });
            }
            Some(path.clone())
        }
        None => source
            .join("Dockerfile")
            .is_file()
            .then(|| PathBuf::from("Dockerfile")),
    };
    let mut generated_base: Option<String> = None;
    let (dockerfile_name, extra, command) = match dockerfile {
        Some(path) => (
            path.to_string_lossy().replace('\\', "/"),
            None,
            config.start_command.clone(),
        ),
        None => {
            if !node::is_node_project(&source) {
                return Err(Error::InvalidConfig {
                    problems: vec![ConfigProblem::new(
                        "source",
                        format!(
                            "'{}' has no Dockerfile and is not a Node.js project: add a Dockerfile \
                             or set provider_options.docker.image",
                            source.display()
                        ),
                    )],
                });
            }
            let command = node::start_command(config, &source)?;
            let base = options.base_image.as_deref().unwrap_or(base_image);
            generated_base = Some(base.to_owned());
            let text = node::generated_dockerfile(&source, base);
            (
                GENERATED_DOCKERFILE.to_owned(),
                Some(ExtraFile {
                    name: GENERATED_DOCKERFILE.to_owned(),
                    contents: text.into_bytes(),
                }),
                Some(command),
            )
        }
    };
    ctx.events.progress(
        &spec.id,
        Phase::Building,
        format!("building {tag} from {}", dockerfile_name),
    );
    let keep = dockerfile_name.clone();
    let tar = tokio::task::spawn_blocking(move || {
        context::build_context(&source, Some(&keep), extra.as_ref())
    })
    .await
    .map_err(|e| Error::provider(PROVIDER_NAME, format!("build context task: {e}"), false))??;
    let generated_from = generated_base.clone();
    let build_log = match build(docker, ctx, spec, options, &tag, &dockerfile_name, tar).await {
        Ok(log) => log,
        Err(Error::BuildFailed {
            deployment,
            step,
            mut message,
        }) if generated_from.is_some() && (step.starts_with("FROM") || step == "build") => {
            if let Some(base) = &generated_from {
                // Before the build output, so the note stays with the error.
                let at = message
                    .find(conan_core::error::BUILD_OUTPUT_MARKER)
                    .unwrap_or(message.len());
                message.insert_str(at, &base_image_note(base));
            }
            return Err(Error::BuildFailed {
                deployment,
                step,
                message,
            });
        }
        Err(e) => return Err(e),
    };
    Ok(PreparedImage {
        tag,
        command,
        build_log,
    })
}

/// What to do when the generated Dockerfile's base image is neither on the daemon nor
/// pullable (no registry reachable).
fn base_image_note(base: &str) -> String {
    format!(
        "\nthe base image '{base}' of the generated Dockerfile is not on the Docker daemon and \
         could not be pulled (is a registry reachable?). Build a Node base image from this \
         machine's node with `conan docker base-image`, or set base_image (in \
         CONAN_HOME/daemon.toml, or provider_options.docker.base_image in conan.toml) to an \
         image the daemon has"
    )
}

async fn build(
    docker: &Docker,
    ctx: &OperationContext,
    spec: &DeploymentSpec,
    options: &DockerOptions,
    tag: &str,
    dockerfile: &str,
    tar: Vec<u8>,
) -> conan_core::Result<Vec<LogLine>> {
    let image_labels = labels::image_labels(spec);
    let build_args: HashMap<&str, &str> = options
        .build_args
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let build_options = BuildImageOptionsBuilder::new()
        .dockerfile(dockerfile)
        .t(tag)
        .labels(&image_labels)
        .buildargs(&build_args)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(build_options, None, Some(bollard::body_full(tar.into())));
    let mut output: Vec<LogLine> = Vec::new();
    let mut step = String::from("build");
    loop {
        // A slow step (a long RUN) sends nothing for a while: race the cancellation
        // against it. Dropping the stream closes the connection, which ends the build.
        let item = tokio::select! {
            () = ctx.cancel.cancelled() => None,
            item = stream.next() => match item {
                Some(item) => Some(item),
                None => break,
            },
        };
        let Some(item) = item else {
            return Err(Error::Cancelled {
                operation: format!("build of {tag}"),
            });
        };
        let info = match item {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(build_failed(spec, &step, &error, &output));
            }
            Err(e) => {
                let err = DockerError::api(format!("build {tag}"), e);
                if let Some(400..=499) = err.status_code() {
                    return Err(build_failed(spec, &step, &err.to_string(), &output));
                }
                return Err(err.into());
            }
        };
        if let Some(text) = info.stream.as_deref() {
            for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                if line.starts_with("Step ") {
                    step = line.split_once(" : ").map_or(line, |(_, s)| s).to_owned();
                }
                ctx.events.progress(&spec.id, Phase::Building, line);
                output.push(LogLine::new(OutputStream::System, line));
            }
        }
        if let Some(status) = info.status.as_deref() {
            output.push(LogLine::new(OutputStream::System, status));
        }
        let error = info.error_detail.as_ref().and_then(|d| d.message.clone());
        if let Some(error) = error {
            return Err(build_failed(spec, &step, &error, &output));
        }
    }
    Ok(output)
}

fn build_failed(spec: &DeploymentSpec, step: &str, error: &str, output: &[LogLine]) -> Error {
    let tail: Vec<&str> = output
        .iter()
        .rev()
        .take(FAILURE_OUTPUT_LINES)
        .map(|l| l.message.as_str())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let mut message = error.trim().to_owned();
    if !tail.is_empty() {
        message.push_str(conan_core::error::BUILD_OUTPUT_MARKER);
        message.push_str(&tail.join("\n"));
    }
    Error::BuildFailed {
        deployment: spec.name().to_owned(),
        step: step.to_owned(),
        message,
    }
}

/// Revision tags of deployment `name` on the daemon: `(revision, tag)`.
pub(crate) async fn revision_tags(
    docker: &Docker,
    name: &str,
) -> Result<Vec<(u64, String)>, DockerError> {
    let repo = labels::image_repo(name);
    let filters = HashMap::from([("reference", vec![format!("{repo}:*")])]);
    let options = ListImagesOptionsBuilder::new().filters(&filters).build();
    let images = docker
        .list_images(Some(options))
        .await
        .map_err(|e| DockerError::api("list images", e))?;
    let prefix = format!("{repo}:r");
    let mut tags: Vec<(u64, String)> = images
        .iter()
        .flat_map(|i| i.repo_tags.iter())
        .filter_map(|t| Some((t.strip_prefix(&prefix)?.parse().ok()?, t.clone())))
        .collect();
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// Removes revision tags of `name` beyond the newest `keep`, never those in `in_use`.
/// Best effort: failures are logged.
pub(crate) async fn prune(docker: &Docker, name: &str, keep: usize, in_use: &[u64]) {
    let tags = match revision_tags(docker, name).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(deployment = name, error = %e, "could not list images to prune");
            return;
        }
    };
    let cut = tags.len().saturating_sub(keep);
    for (revision, tag) in &tags[..cut] {
        if !in_use.contains(revision) {
            remove_tag(docker, tag).await;
        }
    }
}

/// Removes every revision tag of `name` (the images go with their last tag).
pub(crate) async fn remove_all(docker: &Docker, name: &str) {
    match revision_tags(docker, name).await {
        Ok(tags) => {
            for (_, tag) in tags {
                remove_tag(docker, &tag).await;
            }
        }
        Err(e) => tracing::warn!(deployment = name, error = %e, "could not list images to remove"),
    }
}

/// Removes one tag (the image goes with its last tag). Best effort: failures are logged.
pub(crate) async fn remove_tag(docker: &Docker, tag: &str) {
    let options = RemoveImageOptionsBuilder::new().force(false).build();
    match docker.remove_image(tag, Some(options), None).await {
        Ok(_) => tracing::debug!(image = tag, "removed image"),
        Err(e) => tracing::warn!(image = tag, error = %e, "could not remove image"),
    }
}
