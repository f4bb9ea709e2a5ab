//! `conan mcp` driven as a subprocess by MCP clients the project did not write: the
//! official Python SDK (`tests/mcp/python_client.py`) and rmcp's own client. They
//! initialize, list the seven tools with their schemas, deploy the hello app, monitor it,
//! read its logs, update, stop, list and remove it; a crashing app answers `isError` with
//! its failure bundle; bad inputs answer clear tool errors and deploy nothing; no env value
//! appears in any answer or in the daemon's log; the audit log names the MCP client.

mod common;

use std::process::Command;

use common::*;

/// A value no output may contain.
const SECRET: &str = "s3cr3t-MCP-token-9f2c";

/// Whether the official MCP Python SDK is importable; under CI a missing SDK fails the
/// test (`.ci/pip-need.sh` installs it), elsewhere it is skipped with a note.
fn python_sdk() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import mcp"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "the MCP Python SDK is missing: run .ci/pip-need.sh (pip install mcp)"
        );
        eprintln!("skipped: the MCP Python SDK is not installed (pip install mcp)");
    }
    ok
}

#[test]
fn the_official_python_sdk_drives_every_tool_and_no_env_value_leaks() {
    if !python_sdk() {
        return;
    }
    let home = Home::new();
    let out = home.path().join("answers.jsonl");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/python_client.py");
    let mut python = Command::new("python3");
    python.envs(home.envs().iter().map(|(k, v)| (k, v)));
    let output = python
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_conan"))
        .arg(app("hello"))
        .arg(app("crash"))
        .arg(SECRET)
        .arg(&out)
        .env("CONAN_HOME", home.path())
        .env("NO_COLOR", "1")
        .env_remove("XDG_STATE_HOME")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python client failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- daemon log\n{}",
        home.daemon_log()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    let answers = std::fs::read_to_string(&out).expect("the answers file");
    assert!(answers.lines().count() >= 14, "{answers}");
    assert!(answers.contains("API_TOKEN"), "the env name is listed");
    for (what, text) in [
        ("an answer", answers.as_str()),
        ("the daemon's log", home.daemon_log().as_str()),
        ("the server's stderr", &*stderr),
    ] {
        assert!(
            !text.contains(SECRET),
            "the env value appears in {what}:\n{text}"
        );
    }
    // The audit log names the MCP client for each operation.
    let events = home.conan(&["events"]).ok().stdout;
    for op in ["deploy", "update", "stop", "remove"] {
        assert!(
            events
                .lines()
                .any(|l| l.contains(op) && l.contains("(by mcp:python-sdk-test 2.0)")),
            "no audit entry of {op} by the MCP client:\n{events}"
        );
    }
    assert!(!events.contains(SECRET));
}

mod rmcp_client {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use rmcp::model::{
        CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation,
        ProgressNotificationParam,
    };
    use rmcp::service::{NotificationContext, RunningService};
    use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
    use rmcp::{ClientHandler, RoleClient, ServiceExt};
    use serde_json::{Value, json};

    use super::common::{Home, app};

    /// Counts progress notifications.
    #[derive(Clone, Default)]
    struct Client {
        progress: Arc<AtomicUsize>,
    }

    impl ClientHandler for Client {
        fn get_info(&self) -> ClientConfig {
            ClientConfig::new(
                ClientCapabilities::default(),
                Implementation::new("rmcp-test", "3"),
            )
        }

        async fn on_progress(
            &self,
            _params: ProgressNotificationParam,
            _context: NotificationContext<RoleClient>,
        ) {
            self.progress.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `conan ls --json`'s entry, off the runtime's thread (the MCP session runs on it).
    async fn listed(home: &Arc<Home>, name: &str) -> Option<Value> {
        let (home, name) = (home.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || home.listed(&name))
            .await
            .unwrap()
    }

    async fn connect(home: &Home, client: Client) -> RunningService<RoleClient, Client> {
        let cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_conan")).configure(|c| {
            c.env("CONAN_HOME", home.path())
                .env("NO_COLOR", "1")
                .env_remove("XDG_STATE_HOME")
                .envs(home.envs().iter().map(|(k, v)| (k, v)))
                .arg("mcp");
        });
        let transport = TokioChildProcess::new(cmd).expect("spawn conan mcp");
        client.serve(transport).await.expect("initialize")
    }

    async fn call(
        service: &RunningService<RoleClient, Client>,
        tool: &str,
        args: Value,
    ) -> rmcp::model::CallToolResult {
        let Value::Object(args) = args else {
            panic!("arguments are an object")
        };
        service
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
            .await
            .unwrap_or_else(|e| panic!("{tool}: {e}"))
    }

    #[tokio::test]
    async fn rmcp_client_lists_deploys_with_progress_cancels_and_removes() {
        let home = Arc::new(Home::new());
        let client = Client::default();
        let service = connect(&home, client.clone()).await;
        let info = service.peer_info().expect("server info");
        assert_eq!(
            info.server_info.as_ref().map(|i| i.name.as_str()),
            Some("conan")
        );

        let tools = service.list_all_tools().await.unwrap();
        assert_eq!(tools.len(), 7);
        for tool in &tools {
            assert!(tool.output_schema.is_some(), "{}", tool.name);
            assert!(tool.annotations.is_some(), "{}", tool.name);
        }

        let hello = app("hello");
        let r = call(
            &service,
            "deploy_application",
            json!({ "name": "rmcphello", "projectPath": hello, "healthCheckPath": "/health" }),
        )
        .await;
        assert_eq!(r.is_error, Some(false), "{r:?}");
        let deployed = r.structured_content.clone().unwrap();
        assert_eq!(deployed["deployment"]["status"], "running", "{deployed}");
        assert!(
            client.progress.load(Ordering::Relaxed) > 0,
            "progress notifications during the deploy"
        );
        let shown = listed(&home, "rmcphello").await.expect("conan ls shows it");
        assert_eq!(shown["id"], deployed["deployment"]["id"]);

        // A deploy that a client gives up on is cancelled in the daemon.
        let slow = app("slow-start");
        let call_slow = service.call_tool(
            CallToolRequestParams::new("deploy_application").with_arguments(
                json!({
                    "name": "rmcpslow",
                    "projectPath": slow,
                    "healthCheckPath": "/health",
                    "env": { "SLOW_START_MS": "60000" }
                })
                .as_object()
                .unwrap()
                .clone(),
            ),
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(2), call_slow)
                .await
                .is_err(),
            "the slow deploy is still waiting"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let slow = listed(&home, "rmcpslow").await;
            let status = slow
                .as_ref()
                .and_then(|d| d["status"].as_str().map(str::to_owned));
            if !matches!(status.as_deref(), Some("deploying" | "pending" | "running")) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the abandoned deploy was not cancelled: {slow:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let events = {
            let home = home.clone();
            tokio::task::spawn_blocking(move || home.conan(&["events"]).ok().stdout)
                .await
                .unwrap()
        };
        assert!(
            events
                .lines()
                .any(|l| l.contains("deploy cancelled") && l.contains("(by mcp:rmcp-test 3)")),
            "{events}"
        );

        // An unknown tool is a protocol error; a bad argument is a tool error.
        assert!(
            service
                .call_tool(CallToolRequestParams::new("no_such_tool"))
                .await
                .is_err()
        );
        let r = call(
            &service,
            "remove_deployment",
            json!({ "deploymentId": "rmcphello" }),
        )
        .await;
        assert_eq!(r.is_error, Some(true), "a running deployment needs force");
        assert_eq!(r.structured_content.unwrap()["error"]["code"], "running");
        let r = call(
            &service,
            "remove_deployment",
            json!({ "deploymentId": "rmcphello", "force": true }),
        )
        .await;
        assert_eq!(r.is_error, Some(false), "{r:?}");
        let _ = call(
            &service,
            "remove_deployment",
            json!({ "deploymentId": "rmcpslow", "force": true }),
        )
        .await;
        assert!(listed(&home, "rmcphello").await.is_none());
        service.cancel().await.expect("close the session");
    }
}
