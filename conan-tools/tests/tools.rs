//! The tools over an in-process manager with the in-memory provider: the schemas carry the
//! design's fields, every tool answers its shape, bad inputs list every problem and deploy
//! nothing, no env value appears in any answer, and a cancelled call cancels its operation.

use std::time::Duration;

use conan_core::DeploymentManager;
use conan_core::testing::MemoryProvider;
use conan_tools::{CallContext, LocalBackend, ToolOptions, Tools};
use serde_json::{Value, json};

const SECRET: &str = "tools-secret-value-7731";

async fn tools(provider: &MemoryProvider, options: ToolOptions) -> Tools<LocalBackend> {
    let manager = DeploymentManager::builder()
        .provider(provider.clone())
        .build()
        .await
        .unwrap();
    Tools::new(LocalBackend::new(manager), options)
}

fn options() -> ToolOptions {
    ToolOptions::default().providers(["memory"])
}

/// Follows `$ref`s and the non-null arm of an `anyOf` (an `Option`).
fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    loop {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.trim_start_matches("#/$defs/");
            schema = &root["$defs"][name];
        } else if let Some(arms) = schema.get("anyOf").and_then(Value::as_array) {
            schema = arms
                .iter()
                .find(|a| a.get("type") != Some(&json!("null")))
                .unwrap();
        } else {
            return schema;
        }
    }
}

/// The property names at `path` (`["deployment"]`) of a schema.
fn fields(root: &Value, path: &[&str]) -> Vec<String> {
    let mut schema = resolve(root, root);
    for step in path {
        schema = resolve(root, &schema["properties"][*step]);
    }
    let mut names: Vec<String> = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no properties at {path:?}: {schema}"))
        .keys()
        .cloned()
        .collect();
    names.sort();
    names
}

#[track_caller]
fn has(root: &Value, path: &[&str], wanted: &[&str]) {
    let got = fields(root, path);
    for w in wanted {
        assert!(got.iter().any(|g| g == w), "{path:?} lacks {w}: {got:?}");
    }
}

/// The values of a string enum: `enum`, or the `const`s of a `oneOf` (documented variants).
fn variants(schema: &Value) -> Vec<&str> {
    if let Some(values) = schema["enum"].as_array() {
        return values.iter().filter_map(Value::as_str).collect();
    }
    schema["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("not an enum: {schema}"))
        .iter()
        .filter_map(|v| v["const"].as_str())
        .collect()
}

fn required(schema: &Value) -> Vec<&str> {
    let mut r: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    r.sort_unstable();
    r
}

#[tokio::test]
async fn the_seven_schemas_carry_the_design_fields() {
    let provider = MemoryProvider::new();
    let tools = tools(
        &provider,
        ToolOptions::default().providers(["local", "docker"]),
    )
    .await;
    let specs: Vec<Value> = tools
        .specs()
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
    let names: Vec<&str> = specs.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "deploy_application",
            "monitor_deployment",
            "update_deployment",
            "stop_deployment",
            "list_deployments",
            "get_deployment_logs",
            "remove_deployment"
        ]
    );
    let spec = |n: &str| specs.iter().find(|s| s["name"] == n).unwrap();
    let input = |n: &str| spec(n)["inputSchema"].clone();
    let output = |n: &str| spec(n)["outputSchema"].clone();

    let deploy = input("deploy_application");
    assert_eq!(required(&deploy), ["name", "projectPath"]);
    has(
        &deploy,
        &[],
        &[
            "name",
            "projectPath",
            "provider",
            "env",
            "port",
            "healthCheckPath",
            "config",
        ],
    );
    assert_eq!(
        deploy["properties"]["provider"]["enum"],
        json!(["local", "docker"])
    );
    assert_eq!(
        deploy["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let monitor = input("monitor_deployment");
    assert_eq!(required(&monitor), ["deploymentId"]);
    has(&monitor, &[], &["deploymentId", "metrics", "interval"]);
    let metric = resolve(&monitor, &monitor["properties"]["metrics"]["items"]);
    assert_eq!(
        variants(metric),
        ["cpu", "memory", "network", "health", "restarts", "requests"]
    );
    let update = input("update_deployment");
    assert_eq!(required(&update), ["deploymentId"]);
    has(
        &update,
        &[],
        &["deploymentId", "projectPath", "env", "strategy"],
    );
    assert_eq!(
        variants(resolve(&update, &update["properties"]["strategy"])),
        ["recreate", "rolling", "blue-green", "canary"]
    );
    assert_eq!(required(&input("stop_deployment")), ["deploymentId"]);
    let remove = input("remove_deployment");
    assert_eq!(required(&remove), ["deploymentId"]);
    has(&remove, &[], &["deploymentId", "force"]);
    let list = input("list_deployments");
    assert!(required(&list).is_empty());
    has(&list, &[], &["provider", "status"]);
    let logs = input("get_deployment_logs");
    assert_eq!(required(&logs), ["deploymentId"]);
    has(
        &logs,
        &[],
        &[
            "deploymentId",
            "lines",
            "since",
            "level",
            "search",
            "stream",
        ],
    );

    // Answers: `{ success, deployment: { id, name, provider, status, url, startTime, pid,
    // port }, message }` and `{ success, monitoring: { deploymentId, status, metrics: { cpu:
    // { usage }, memory: { usage, limit }, health: { status, lastCheck } }, interval } }`.
    for op in [
        "deploy_application",
        "update_deployment",
        "stop_deployment",
        "remove_deployment",
    ] {
        let out = output(op);
        has(&out, &[], &["success", "deployment", "message"]);
        has(
            &out,
            &["deployment"],
            &[
                "id",
                "name",
                "provider",
                "status",
                "url",
                "startTime",
                "pid",
                "port",
            ],
        );
    }
    let out = output("monitor_deployment");
    has(&out, &[], &["success", "monitoring"]);
    has(
        &out,
        &["monitoring"],
        &["deploymentId", "status", "metrics", "interval"],
    );
    has(&out, &["monitoring", "metrics", "cpu"], &["usage"]);
    has(
        &out,
        &["monitoring", "metrics", "memory"],
        &["usage", "limit"],
    );
    has(
        &out,
        &["monitoring", "metrics", "health"],
        &["status", "lastCheck"],
    );
    has(
        &output("list_deployments"),
        &[],
        &["success", "deployments", "count"],
    );
    has(
        &output("get_deployment_logs"),
        &[],
        &["success", "deploymentId", "logs"],
    );

    // Annotations.
    for n in [
        "list_deployments",
        "get_deployment_logs",
        "monitor_deployment",
    ] {
        assert_eq!(spec(n)["annotations"]["readOnlyHint"], true, "{n}");
    }
    for n in ["stop_deployment", "remove_deployment"] {
        assert_eq!(spec(n)["annotations"]["destructiveHint"], true, "{n}");
        assert_eq!(spec(n)["annotations"]["readOnlyHint"], false, "{n}");
    }
}

#[tokio::test]
async fn every_tool_answers_its_shape_over_an_in_process_manager() {
    let provider = MemoryProvider::new();
    let tools = tools(&provider, options()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let ctx = CallContext::default();
    let answers = [
        tools
            .call(
                "deploy_application",
                json!({ "name": "web", "projectPath": path, "env": { "TOKEN": SECRET }, "port": 4100 }),
                &ctx,
            )
            .await
            .unwrap(),
        tools.call("monitor_deployment", json!({ "deploymentId": "web" }), &ctx).await.unwrap(),
        tools.call("get_deployment_logs", json!({ "deploymentId": "web" }), &ctx).await.unwrap(),
        tools
            .call("update_deployment", json!({ "deploymentId": "web", "env": { "MORE": SECRET } }), &ctx)
            .await
            .unwrap(),
        tools.call("list_deployments", json!({}), &ctx).await.unwrap(),
        tools.call("stop_deployment", json!({ "deploymentId": "web" }), &ctx).await.unwrap(),
        tools.call("remove_deployment", json!({ "deploymentId": "web" }), &ctx).await.unwrap(),
    ];
    let deployed = &answers[0];
    assert_eq!(deployed["success"], true);
    assert_eq!(deployed["deployment"]["status"], "running");
    assert_eq!(deployed["deployment"]["name"], "web");
    assert_eq!(deployed["deployment"]["provider"], "memory");
    assert_eq!(deployed["deployment"]["env"], json!(["TOKEN"]));
    let id = deployed["deployment"]["id"].as_str().unwrap();
    assert_eq!(answers[1]["monitoring"]["deploymentId"], id);
    assert_eq!(answers[1]["monitoring"]["status"], "running");
    assert!(answers[1]["monitoring"]["metrics"]["health"]["status"].is_string());
    assert_eq!(answers[2]["deploymentId"], id);
    assert_eq!(answers[3]["deployment"]["revision"], 2);
    assert_eq!(answers[3]["deployment"]["env"], json!(["MORE", "TOKEN"]));
    assert_eq!(answers[4]["count"], 1);
    assert_eq!(answers[5]["deployment"]["status"], "stopped");
    assert_eq!(answers[6]["deployment"]["name"], "web");
    // By id as well as by name; gone after the removal.
    let gone = tools
        .call("stop_deployment", json!({ "deploymentId": id }), &ctx)
        .await
        .unwrap_err();
    assert_eq!(gone.code, "not_found");
    for answer in &answers {
        assert!(!answer.to_string().contains(SECRET), "{answer}");
    }
}

#[tokio::test]
async fn bad_inputs_list_every_problem_with_its_field_and_deploy_nothing() {
    let provider = MemoryProvider::new();
    let root = tempfile::tempdir().unwrap();
    let allowed = root.path().join("apps");
    std::fs::create_dir(&allowed).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let file = allowed.join("server.js");
    std::fs::write(&file, "").unwrap();
    let tools = tools(&provider, options().allowed_roots([allowed.clone()])).await;
    let ctx = CallContext::default();
    let problems = |e: &conan_tools::ToolError| -> Vec<String> {
        e.problems.iter().map(|p| p.path.clone()).collect()
    };

    let e = tools
        .call(
            "deploy_application",
            json!({ "projectPath": allowed }),
            &ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.code.as_str(), problems(&e)),
        ("invalid_input", vec!["name".to_owned()])
    );

    // Several problems at once, each with its field.
    let huge = "x".repeat(40 * 1024);
    let e = tools
        .call(
            "deploy_application",
            json!({ "name": "a", "projectPath": file, "provider": "railway", "env": { "BIG": huge } }),
            &ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "invalid_input");
    let paths = problems(&e);
    for field in ["projectPath", "provider", "env.BIG"] {
        assert!(
            paths.iter().any(|p| p == field),
            "{field} in {paths:?}: {}",
            e.message
        );
    }
    assert!(
        e.message.contains("is a file, not a directory"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("unknown provider 'railway'"),
        "{}",
        e.message
    );
    assert!(
        !e.message.contains(&huge[..64]),
        "an env value in the message"
    );

    for (args, field, text) in [
        (
            json!({ "name": "a", "projectPath": outside.path() }),
            "projectPath",
            "outside the allowed roots",
        ),
        (
            json!({ "name": "a", "projectPath": "/no/such/dir" }),
            "projectPath",
            "does not exist",
        ),
        (
            json!({ "name": "Not A Label", "projectPath": allowed }),
            "name",
            "",
        ),
        (
            json!({ "name": "a", "projectPath": allowed, "config": { "env": { "K": "v" } } }),
            "config.env",
            "",
        ),
    ] {
        let e = tools
            .call("deploy_application", args.clone(), &ctx)
            .await
            .unwrap_err();
        assert!(problems(&e).iter().any(|p| p == field), "{args}: {e:?}");
        assert!(e.message.contains(text), "{args}: {}", e.message);
    }
    let e = tools
        .call(
            "deploy_application",
            json!({ "name": "a", "projectPath": allowed, "bogus": 1 }),
            &ctx,
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("bogus"), "{}", e.message);
    let e = tools
        .call(
            "get_deployment_logs",
            json!({ "deploymentId": "a", "lines": 1_000_000 }),
            &ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(problems(&e), ["lines"]);
    let e = tools
        .call("monitor_deployment", json!({}), &ctx)
        .await
        .unwrap_err();
    assert_eq!(problems(&e), ["deploymentId"]);
    let e = tools
        .call("no_such_tool", json!({}), &ctx)
        .await
        .unwrap_err();
    assert_eq!(e.code, "unknown_tool");

    assert!(
        tools
            .call("list_deployments", json!({}), &ctx)
            .await
            .unwrap()["count"]
            == 0
    );
    assert_eq!(provider.len(), 0, "nothing reached the provider");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_cancels_its_operation() {
    let provider = MemoryProvider::new();
    let tools = std::sync::Arc::new(tools(&provider, options()).await);
    let dir = tempfile::tempdir().unwrap();
    let steps = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = steps.clone();
    let ctx = CallContext {
        requested_by: Some("mcp:test 1".to_owned()),
        progress: Some(std::sync::Arc::new(move |s| seen.lock().unwrap().push(s))),
        ..CallContext::default()
    };
    let args = json!({
        "name": "slow",
        "projectPath": dir.path(),
        "config": { "labels": { MemoryProvider::SLOW_LABEL: "60000" } }
    });
    let call = {
        let (tools, ctx) = (tools.clone(), ctx.clone());
        tokio::spawn(async move { tools.call("deploy_application", args, &ctx).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctx.cancel.cancel();
    let e = call.await.unwrap().unwrap_err();
    assert_eq!(e.code, "cancelled");
    assert!(!steps.lock().unwrap().is_empty(), "progress was reported");
    let listed = tools
        .call("list_deployments", json!({}), &CallContext::default())
        .await
        .unwrap();
    let status = listed["deployments"][0]["status"].as_str().unwrap_or("");
    assert_ne!(status, "running", "{listed}");
    assert_eq!(provider.backend().running(), 0);
}
