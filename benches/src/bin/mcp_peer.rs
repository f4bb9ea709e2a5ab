//! `tools/call deploy_application` through `conan mcp` against `conan deploy` of the same
//! app (`examples/apps/hello`, health check `/health`), both to a ready deployment through
//! one running daemon; and the MCP server's resident memory.
//!
//! The runs alternate (one `conan deploy`, one `tools/call`, ...) so a machine that drifts
//! affects both alike; each deployment is removed before the next. The MCP session is one
//! `conan mcp` child spoken to in plain JSON-RPC lines on its stdin/stdout (initialize
//! first), as a client does; a call's time is from writing the request to reading its
//! answer. `conan deploy`'s time includes starting the `conan` process, as a user (or an
//! agent with a shell tool) pays it. The harness builds `conan` in release mode first (or
//! uses `CONAN_BIN`).
//!
//! ```text
//! cargo run --release -p conan-benches --bin mcp_peer -- [--runs N]
//! ```

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use conan_benches::{arg_u64, median, ms, release_conan, rss_kib, workspace_root};
use serde_json::{Value, json};

fn conan(bin: &Path, home: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(bin)
        .args(args)
        .env("CONAN_HOME", home)
        .env("CONAN_PORT_RANGE", "27600-27699")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run conan");
    assert!(
        out.status.success(),
        "conan {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One `conan mcp` session.
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next: u64,
}

impl Session {
    fn start(bin: &Path, home: &Path) -> Self {
        let mut child = Command::new(bin)
            .arg("mcp")
            .env("CONAN_HOME", home)
            .env("CONAN_PORT_RANGE", "27600-27699")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn conan mcp");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut s = Self {
            child,
            stdin,
            stdout,
            next: 1,
        };
        s.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": { "name": "mcp_peer", "version": "1" }
            }),
        );
        s.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
        s
    }

    fn send(&mut self, message: &Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).expect("write");
        self.stdin.flush().expect("flush");
    }

    /// Sends a request and reads lines until its answer (notifications are skipped).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read");
            assert!(n > 0, "conan mcp closed its stdout");
            let message: Value = serde_json::from_str(&line).expect("a JSON-RPC line");
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
        }
    }

    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let result = self.request(
            "tools/call",
            json!({ "name": tool, "arguments": arguments }),
        );
        assert_eq!(result["isError"], false, "{tool}: {result}");
        result
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let runs = arg_u64("--runs", 7);
    let bin: PathBuf = release_conan();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();
    let hello = workspace_root().join("examples/apps/hello");
    let hello = hello.canonicalize().expect("examples/apps/hello");
    let hello_str = hello.to_str().expect("utf-8 path");

    conan(&bin, home, &["ls"]); // starts the daemon
    let mut session = Session::start(&bin, home);
    // One of each first: warm the caches (node, the page cache, the daemon's first deploy).
    conan(
        &bin,
        home,
        &[
            "deploy", hello_str, "--name", "warm-cli", "--health", "/health",
        ],
    );
    conan(&bin, home, &["rm", "--force", "warm-cli"]);
    session.call(
        "deploy_application",
        json!({ "name": "warm-mcp", "projectPath": hello_str, "healthCheckPath": "/health" }),
    );
    session.call(
        "remove_deployment",
        json!({ "deploymentId": "warm-mcp", "force": true }),
    );
    let mut cli = Vec::new();
    let mut mcp = Vec::new();
    for i in 0..runs {
        let name = format!("cli-{i}");
        let t = Instant::now();
        conan(
            &bin,
            home,
            &["deploy", hello_str, "--name", &name, "--health", "/health"],
        );
        cli.push(t.elapsed());
        conan(&bin, home, &["rm", "--force", &name]);

        let name = format!("mcp-{i}");
        let t = Instant::now();
        let answer = session.call(
            "deploy_application",
            json!({ "name": name, "projectPath": hello_str, "healthCheckPath": "/health" }),
        );
        mcp.push(t.elapsed());
        assert_eq!(
            answer["structuredContent"]["deployment"]["status"],
            "running"
        );
        session.call(
            "remove_deployment",
            json!({ "deploymentId": name, "force": true }),
        );
    }
    let rss = rss_kib(session.child.id());
    let (cli, mcp) = (median(&mut cli), median(&mut mcp));
    println!("deploy to ready of examples/apps/hello through one daemon, median of {runs}:");
    println!("  conan deploy --health /health       {}", ms(cli));
    println!(
        "  tools/call deploy_application        {} = {:.2}x conan deploy",
        ms(mcp),
        mcp.as_secs_f64() / cli.as_secs_f64().max(f64::EPSILON)
    );
    println!("conan mcp RSS after {} calls: {rss} KiB", 2 * runs + 1);
    drop(session);
    let _ = Command::new(&bin)
        .args(["daemon", "stop"])
        .env("CONAN_HOME", home)
        .stdout(Stdio::null())
        .status();
    std::thread::sleep(Duration::from_millis(100));
}
