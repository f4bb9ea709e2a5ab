//! The command probe: `sh -c` with a clean environment, bounded in time and output.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{Instant, timeout_at};

use super::{
    DETAIL_EXCERPT_BYTES, MAX_OUTPUT_BYTES, ProbeOutcome, io_text, one_line, quote_command,
};

/// How long a command's pipes may stay open after it exited (a background child may hold
/// them) before the probe stops reading them.
const PIPE_GRACE: Duration = Duration::from_millis(50);

/// `PATH` of a command probe when neither its env nor this process has one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) async fn command_probe(
    command: &str,
    dir: &Path,
    env: &[(String, String)],
    deadline: Instant,
) -> ProbeOutcome {
    let what = format!("command `{}`", quote_command(command));
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropping the child (on timeout, or when the caller drops the probe) kills it.
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ProbeOutcome::unhealthy(format!(
                "{what} could not start in {}: {}",
                dir.display(),
                io_text(&e)
            ));
        }
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let status = {
        let pipes = async {
            tokio::join!(drain(stdout, &mut out), drain(stderr, &mut err));
        };
        let mut pipes = std::pin::pin!(pipes);
        let mut pipes_done = false;
        let status = {
            let mut wait = std::pin::pin!(timeout_at(deadline, child.wait()));
            loop {
                tokio::select! {
                    s = &mut wait => break s,
                    () = &mut pipes, if !pipes_done => pipes_done = true,
                }
            }
        };
        // Output still buffered in the pipes is worth a moment; a background child
        // holding them open is not worth the rest of the timeout.
        if !pipes_done && matches!(status, Ok(Ok(_))) {
            let grace = (Instant::now() + PIPE_GRACE).min(deadline);
            let _ = timeout_at(grace, &mut pipes).await;
        }
        status
    };
    match status {
        Ok(Ok(status)) if status.success() => ProbeOutcome::healthy(format!("{what} exited 0")),
        Ok(Ok(status)) => {
            let mut detail = match status.code() {
                Some(code) => format!("{what} exited {code}"),
                None => format!("{what} ended with {status}"),
            };
            let said = if err.iter().any(|b| !b.is_ascii_whitespace()) {
                &err
            } else {
                &out
            };
            let said = one_line(&String::from_utf8_lossy(said), DETAIL_EXCERPT_BYTES);
            if !said.is_empty() {
                detail.push_str(": ");
                detail.push_str(&said);
            }
            ProbeOutcome::unhealthy(detail)
        }
        Ok(Err(e)) => ProbeOutcome::unhealthy(format!("{what}: wait: {}", io_text(&e))),
        Err(_) => {
            // kill_on_drop would do it too; asking now makes the intent plain. The runtime
            // reaps the killed child.
            let _ = child.start_kill();
            ProbeOutcome::timeout(format!("{what} (killed)"))
        }
    }
}

/// Reads `pipe` to its end, keeping its first [`MAX_OUTPUT_BYTES`] in `kept`.
async fn drain<R: AsyncRead + Unpin>(pipe: Option<R>, kept: &mut Vec<u8>) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = [0u8; 1024];
    // A read error ends the output like an end of file: the exit status decides.
    while let Ok(n) = pipe.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = MAX_OUTPUT_BYTES.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
}
