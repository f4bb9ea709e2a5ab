"""Drives `conan mcp` with the official MCP Python SDK (a client the project did not write).

Usage: python_client.py CONAN_BIN HELLO_DIR CRASH_DIR SECRET OUT_FILE

The environment (CONAN_HOME, CONAN_PORT_RANGE, ...) is passed to the server. Every
answer is written to OUT_FILE (one JSON line each), so the caller can grep them for the
secret. Exits non-zero with a message on the first failed check.
"""

import asyncio
import json
import os
import sys
import tempfile

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

TOOLS = {
    "deploy_application",
    "monitor_deployment",
    "update_deployment",
    "stop_deployment",
    "list_deployments",
    "get_deployment_logs",
    "remove_deployment",
}


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


async def main():
    conan, hello, crash, secret, out_path = sys.argv[1:6]
    out = open(out_path, "w", encoding="utf-8")

    def record(label, result):
        dump = result.model_dump(mode="json", by_alias=True)
        out.write(json.dumps({"call": label, "result": dump}) + "\n")
        out.flush()
        return result

    params = StdioServerParameters(command=conan, args=["mcp"], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(
            read, write, client_info=types.Implementation(name="python-sdk-test", version="2.0")
        ) as session:
            init = await session.initialize()
            check(init.server_info.name == "conan", f"server name {init.server_info}")
            check(init.capabilities.tools is not None, "tools capability")

            listed = await session.list_tools()
            names = {t.name for t in listed.tools}
            check(names == TOOLS, f"seven tools, got {sorted(names)}")
            by_name = {t.name: t for t in listed.tools}
            deploy_schema = by_name["deploy_application"].input_schema
            check(set(deploy_schema["required"]) == {"name", "projectPath"}, deploy_schema)
            for field in ["name", "projectPath", "provider", "env", "port", "healthCheckPath"]:
                check(field in deploy_schema["properties"], f"deploy input has {field}")
            check(by_name["list_deployments"].annotations.read_only_hint is True, "list read-only")
            check(by_name["remove_deployment"].annotations.destructive_hint is True, "remove destructive")
            for t in listed.tools:
                check(t.output_schema is not None, f"{t.name} has an output schema")

            steps = []

            async def on_progress(progress, total, message):
                steps.append(message)

            r = record(
                "deploy",
                await session.call_tool(
                    "deploy_application",
                    {
                        "name": "pyhello",
                        "projectPath": hello,
                        "healthCheckPath": "/health",
                        "env": {"API_TOKEN": secret},
                    },
                    progress_callback=on_progress,
                ),
            )
            check(not r.is_error, f"deploy succeeded: {r.content}")
            d = r.structured_content["deployment"]
            check(r.structured_content["success"] is True, "success")
            check(d["status"] == "running" and d["pid"] and d["port"] and d["url"], d)
            check(d["env"] == ["API_TOKEN"], f"env names only: {d['env']}")
            check(len(steps) > 0, "progress notifications during the deploy")
            dep_id = d["id"]

            r = record("monitor", await session.call_tool(
                "monitor_deployment", {"deploymentId": "pyhello", "metrics": ["cpu", "memory", "health"], "interval": 1000}))
            check(not r.is_error, f"monitor: {r.content}")
            m = r.structured_content["monitoring"]
            check(m["deploymentId"] == dep_id and m["status"] == "running", m)
            check("usage" in m["metrics"]["cpu"] and "limit" in m["metrics"]["memory"], m)
            check("lastCheck" in m["metrics"]["health"] and m["interval"] == 1000, m)

            r = record("logs", await session.call_tool(
                "get_deployment_logs", {"deploymentId": dep_id, "lines": 20, "search": "listening"}))
            check(not r.is_error, f"logs: {r.content}")
            check(any("hello listening" in l["message"] for l in r.structured_content["logs"]), r.structured_content)

            r = record("update", await session.call_tool(
                "update_deployment", {"deploymentId": "pyhello", "env": {"OTHER": "x"}, "strategy": "recreate"},
                progress_callback=on_progress))
            check(not r.is_error, f"update: {r.content}")
            check(r.structured_content["deployment"]["revision"] == 2, r.structured_content)

            r = record("resources", await session.list_resources())
            uris = {res.uri for res in r.resources}
            check("conan://deployments/pyhello" in uris, uris)
            r = record("resource", await session.read_resource("conan://deployments/pyhello"))
            check('"running"' in r.contents[0].text, r.contents)

            r = record("list", await session.call_tool("list_deployments", {"status": "running"}))
            check(not r.is_error and r.structured_content["count"] == 1, r.structured_content)

            r = record("stop", await session.call_tool("stop_deployment", {"deploymentId": "pyhello"}))
            check(not r.is_error and r.structured_content["deployment"]["status"] == "stopped", r.content)

            r = record("remove", await session.call_tool("remove_deployment", {"deploymentId": "pyhello"}))
            check(not r.is_error, f"remove: {r.content}")

            # A deploy that fails: isError with the bundle.
            r = record("failing", await session.call_tool(
                "deploy_application",
                {"name": "pycrash", "projectPath": crash, "env": {"API_TOKEN": secret}}))
            check(r.is_error, "a crashing app is an error")
            err = r.structured_content["error"]
            check(r.structured_content["success"] is False, r.structured_content)
            check(err["failure"]["exitCode"] == 1, err)
            check(any("fatal error" in l["message"] for l in err["failure"]["lastLogs"]), err)
            r = record("remove failed", await session.call_tool(
                "remove_deployment", {"deploymentId": "pycrash", "force": True}))
            check(not r.is_error, f"remove the failed one: {r.content}")

            # Bad inputs: clear tool errors, nothing deployed.
            with tempfile.NamedTemporaryFile(suffix=".js") as f:
                bad = [
                    ({"projectPath": hello}, "name"),
                    ({"name": "pyfile", "projectPath": f.name}, "projectPath"),
                    ({"name": "pyprov", "projectPath": hello, "provider": "railway"}, "provider"),
                ]
                for args, field in bad:
                    r = record("bad:" + field, await session.call_tool("deploy_application", args))
                    check(r.is_error, f"{args} is an error")
                    err = r.structured_content["error"]
                    check(err["code"] == "invalid_input", err)
                    check(any(p["path"] == field for p in err["problems"]), err)

            r = record("after", await session.call_tool("list_deployments", {}))
            names = [d["name"] for d in r.structured_content["deployments"]]
            check("pyfile" not in names and "pyprov" not in names, names)

    print("python mcp client: all checks passed")


asyncio.run(main())
