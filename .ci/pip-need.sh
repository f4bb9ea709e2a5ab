#!/usr/bin/env bash
# Installs the Python packages the tests drive (when missing): the official MCP Python SDK,
# the client `conan mcp`'s tests talk to (conan-cli/tests/mcp.rs). Usage: pip-need.sh
set -euo pipefail
if ! python3 -c 'import mcp' >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check 'mcp>=2,<3'
fi
python3 -c 'import importlib.metadata as m; print("python mcp", m.version("mcp"))'
