#!/usr/bin/env python3
"""A scripted AI agent whose MCP server sits behind `quorate mcp-gate`.

The agent speaks MCP (JSON-RPC 2.0 over stdio) to the gate, which starts
files_server.py and lets each tools/call through only on a quorate ALLOW.
Against `quorate dev`, from the repository's root:

    python3 examples/mcp-agent/agent.py

It runs `quorate` as $QUORATE_BIN, else the build in target/ or
$CARGO_TARGET_DIR, else `cargo run -q -p quorate --`. The gate reaches the
cluster as quorate's CLI does: $QUORATE_ENDPOINT (default the dev nodes),
and $QUORATE_CA/$QUORATE_CERT/$QUORATE_KEY or the dev cluster's agent
certificate. Exit 0 when every call got the answer the policy
(config/dev/mcp.cedar, domain "mcp") gives, 1 otherwise.
"""
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def quorate():
    if os.environ.get("QUORATE_BIN"):
        return [os.environ["QUORATE_BIN"]]
    for target in [os.environ.get("CARGO_TARGET_DIR"), os.path.join(ROOT, "target"),
                   os.path.expanduser("~/.cache/quorate/target")]:
        if target and os.path.exists(os.path.join(target, "debug", "quorate")):
            return [os.path.join(target, "debug", "quorate")]
    if shutil.which("quorate"):
        return ["quorate"]
    return ["cargo", "run", "-q", "-p", "quorate", "--"]


# (what the agent wants, tool, arguments, whether the policy allows it)
PLAN = [
    ("read its to-do list", "read_file", {"path": "/notes/todo.txt"}, True),
    ("write a note", "write_note", {"path": "/notes/plan.txt", "text": "ship it"}, True),
    ("read the password file", "read_file", {"path": "/etc/passwd"}, False),
    ("write outside /notes", "write_note", {"path": "/etc/cron.d/x", "text": "* * * * * evil"}, False),
    ("delete the to-do list", "delete_file", {"path": "/notes/todo.txt"}, False),
]


def main():
    agent = os.environ.get("MCP_AGENT", 'Agent::"assistant"')
    endpoint = os.environ.get("QUORATE_ENDPOINT", "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103")
    cmd = quorate() + ["mcp-gate", "--endpoint", endpoint, "--domain", "mcp", "--agent", agent,
                       "--", sys.executable, os.path.join(HERE, "files_server.py")]
    gate = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    next_id = iter(range(1, 1000))

    def ask(method, params=None):
        msg = {"jsonrpc": "2.0", "id": next(next_id), "method": method}
        if params is not None:
            msg["params"] = params
        gate.stdin.write(json.dumps(msg) + "\n")
        gate.stdin.flush()
        line = gate.stdout.readline()
        if not line:
            sys.exit(f"the gate closed (exit {gate.wait()}); see its message above")
        return json.loads(line)

    init = ask("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                              "clientInfo": {"name": "example-agent", "version": "1"}})
    print(f"connected to {init['result']['serverInfo']['name']} through quorate mcp-gate as {agent}")
    gate.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n")
    tools = [t["name"] for t in ask("tools/list")["result"]["tools"]]
    print(f"tools: {', '.join(tools)}\n")
    as_expected = True
    indexes = []
    for want, tool, args, allowed in PLAN:
        r = ask("tools/call", {"name": tool, "arguments": args})
        if "error" in r:
            data = r["error"].get("data", {})
            if data.get("decision_index"):
                indexes.append(data["decision_index"])
            print(f"  {want:<26} {tool:<12} → refused: {data.get('reason')} "
                  f"(decision #{data.get('decision_index')}); the server never saw it")
            as_expected &= not allowed
        else:
            text = r["result"]["content"][0]["text"]
            print(f"  {want:<26} {tool:<12} → ALLOW, the server answered: {text!r}")
            as_expected &= allowed
    gate.stdin.close()
    gate.wait()
    if indexes:
        print(f"\nThe whole run as one tree: https://127.0.0.1:7201/#/lineage/{indexes[0]}")
    print("every answer as the policy says" if as_expected else "UNEXPECTED answers: see above")
    return 0 if as_expected else 1


if __name__ == "__main__":
    sys.exit(main())
