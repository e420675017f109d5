"""Real coding agents through the gateway, offline: Claude Code (`claude -p`)
and Codex CLI (`codex exec`) on a channel that speaks their API and on a
chat-only one (translated), and OpenCode on each of its three wires against
the chat-only channel. Each case is a prompt and a tool-call round trip: the fake
answers the first agent turn with a call to the client's file-reading tool,
the client runs it, and the second turn must carry the file's token back
upstream; the client must then print the fake's final answer.

Run by scripts/clients-smoke (which installs the clients); standard library
only. Offline settings follow the clients' own documentation."""

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

from gateway_stack import Stack

BIN = os.environ["CODEX_PROXY_BIN"]
CLIENTS = os.environ["CLIENTS_BIN"]  # node_modules/.bin with claude, codex, opencode
TIMEOUT = int(os.environ.get("CLIENT_TIMEOUT", "240"))

CONF = """
server:
  listen: ["127.0.0.1:0"]
  threads: 2
storage:
  data_dir: {data}
  flush_interval: 20ms
admin:
  listen: "off"
demo_upstream: never
models:
  - {{id: claude-sonnet-4-6, owned_by: anthropic, price: {{input: 3, cached_input: 0.3, cache_write: 3.75, output: 15}}}}
  - {{id: gpt-5.1-codex, owned_by: openai, price: {{input: 1.25, cached_input: 0.125, output: 10}}}}
  - {{id: qwen3-coder, owned_by: qwen, price: {{input: 0.5, cached_input: 0.05, output: 2}}}}
channels:
  - name: chat-only
    kind: openai-chat
    base_url: {chat_fake}/v1
    api_key: sk-fake
    models: [qwen3-coder]
    health_check: {{enabled: false}}
  - name: openai
    kind: openai
    base_url: {fake}/v1
    api_key: sk-fake
    models: [gpt-5.1-codex]
    health_check: {{enabled: false}}
  - name: anthropic
    kind: anthropic
    base_url: {fake}
    api_key: sk-fake
    models: [claude-sonnet-4-6]
    health_check: {{enabled: false}}
"""


def script_round_trip(stack, upstream, tool, arguments, answer):
    """The first agent turn gets a call to `tool`, the second `answer`. Only
    agent turns (they declare tools) take these; title and other side
    requests get the fake's default text."""
    stack.reset()
    stack.script(
        {"body_contains": '"tools"', "tool_call": {"name": tool, "arguments": json.dumps(arguments)}},
        {"body_contains": '"tools"', "text": answer},
        upstream=upstream,
    )


def home_env(tmp, name):
    home = os.path.join(tmp, "home-" + name)
    os.makedirs(home, exist_ok=True)
    env = {
        "PATH": CLIENTS + os.pathsep + os.environ["PATH"],
        "HOME": home,
        "TMPDIR": tmp,
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
        "XDG_CACHE_HOME": os.path.join(home, ".cache"),
        "XDG_STATE_HOME": os.path.join(home, ".local", "state"),
        "DO_NOT_TRACK": "1",
        "NO_COLOR": "1",
        "TERM": "dumb",
    }
    return home, env


def claude_case(model):
    return lambda stack, tmp, work, token_file: claude(model, stack, tmp, work, token_file)


def claude(model, stack, tmp, work, token_file):
    home, env = home_env(tmp, "claude-" + model)
    env.update(
        {
            "ANTHROPIC_BASE_URL": stack.base,  # no /v1: Claude Code appends it
            "ANTHROPIC_AUTH_TOKEN": stack.key,
            "ANTHROPIC_MODEL": model,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
            "ANTHROPIC_SMALL_FAST_MODEL": model,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
        }
    )
    cmd = ["claude", "-p", "Read smoke.txt and report the token in it.", "--allowedTools", "Read"]
    return cmd, env, ("Read", {"file_path": token_file})


def codex_case(model, websocket=False):
    return lambda stack, tmp, work, token_file: codex(model, stack, tmp, work, token_file, websocket)


def codex(model, stack, tmp, work, token_file, websocket):
    home, env = home_env(tmp, "codex-" + model + ("-ws" if websocket else ""))
    codex_home = os.path.join(home, ".codex")
    os.makedirs(codex_home, exist_ok=True)
    with open(os.path.join(codex_home, "config.toml"), "w") as f:
        f.write(
            f"""model = "{model}"
model_provider = "relay"
[analytics]
enabled = false
[features]
plugins = false
remote_plugin = false
apps = false
[model_providers.relay]
name = "relay"
base_url = "{stack.base}/v1"
env_key = "RELAY_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
supports_websockets = {"true" if websocket else "false"}
"""
        )
    env.update({"CODEX_HOME": codex_home, "RELAY_API_KEY": stack.key})
    out = os.path.join(work, "codex-last.txt")
    cmd = ["codex", "exec", "--skip-git-repo-check", "--ephemeral", "-s", "read-only", "-o", out,
           "Print the token in smoke.txt."]
    return cmd, env, ("exec_command", {"cmd": f"cat {token_file}"})


def opencode_case(wire, npm, model):
    def case(stack, tmp, work, token_file):
        home, env = home_env(tmp, "opencode-" + wire)
        cfg_dir = os.path.join(env["XDG_CONFIG_HOME"], "opencode")
        # A lock file naming the plugin package stops OpenCode from running
        # `npm install @opencode-ai/plugin` in the background on every start.
        os.makedirs(os.path.join(cfg_dir, "node_modules", "@opencode-ai", "plugin"), exist_ok=True)
        with open(os.path.join(cfg_dir, "package-lock.json"), "w") as f:
            json.dump({"name": "opencode", "lockfileVersion": 3, "requires": True,
                       "packages": {"": {"dependencies": {"@opencode-ai/plugin": "*"}},
                                    "node_modules/@opencode-ai/plugin": {"version": "1.18.33"}}}, f)
        conf = os.path.join(tmp, f"opencode-{wire}.json")
        with open(conf, "w") as f:
            json.dump({"autoupdate": False, "share": "disabled", "model": f"relay/{model}", "small_model": f"relay/{model}",
                       "provider": {"relay": {"npm": npm,
                                              "options": {"baseURL": stack.base + "/v1", "apiKey": "{env:RELAY_API_KEY}"},
                                              "models": {model: {"name": model}}}}}, f)
        env.update({"OPENCODE_CONFIG": conf, "RELAY_API_KEY": stack.key, "OPENCODE_DISABLE_MODELS_FETCH": "1",
                    "OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
                    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1", "OPENCODE_DISABLE_SHARE": "1"})
        cmd = ["opencode", "run", "Read smoke.txt and report the token in it."]
        return cmd, env, ("read", {"filePath": token_file})

    return case


# name, set-up, upstream ("chat": the chat-only fake), translation expected.
CASES = [
    ("claude-code", claude_case("claude-sonnet-4-6"), "full", None),
    ("claude-code-on-chat", claude_case("qwen3-coder"), "chat", "messages->chat"),
    ("codex", codex_case("gpt-5.1-codex"), "full", None),
    ("codex-on-chat", codex_case("qwen3-coder"), "chat", "responses->chat"),
    ("codex-websocket", codex_case("gpt-5.1-codex", websocket=True), "full", None),
    ("opencode-chat", opencode_case("chat", "@ai-sdk/openai-compatible", "qwen3-coder"), "chat", None),
    ("opencode-responses", opencode_case("responses", "@ai-sdk/openai", "qwen3-coder"), "chat", "responses->chat"),
    ("opencode-messages", opencode_case("messages", "@ai-sdk/anthropic", "qwen3-coder"), "chat", "messages->chat"),
]


def run_case(stack, tmp, name, make, where):
    work = os.path.join(tmp, "work-" + name)
    os.makedirs(work, exist_ok=True)
    token = "smoke-" + secrets.token_hex(6)
    token_file = os.path.join(work, "smoke.txt")
    with open(token_file, "w") as f:
        f.write(token + "\n")
    cmd, env, (tool, args) = make(stack, tmp, work, token_file)
    answer = f"The token is {token}. DONE-{name}"
    upstream = stack.chat_fake if where == "chat" else stack.fake
    script_round_trip(stack, upstream, tool, args, answer)
    started = time.time()
    try:
        p = subprocess.run(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=TIMEOUT)
        code, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        code, out, err = "timeout", e.stdout or "", e.stderr or ""
        out = out.decode() if isinstance(out, bytes) else out
        err = err.decode() if isinstance(err, bytes) else err
    secs = time.time() - started
    if os.path.exists(os.path.join(work, "codex-last.txt")):
        out += open(os.path.join(work, "codex-last.txt")).read()
    bodies = [r["body"] for r in stack.upstream_requests(upstream)]
    agent_turns = [b for b in bodies if '"tools"' in b]
    round_trip = any(token in b for b in agent_turns[1:])
    answered = f"DONE-{name}" in out
    ok = code == 0 and answered and round_trip
    print(f"{'PASS' if ok else 'FAIL'} {name}: exit {code}, {secs:.1f}s, {len(bodies)} upstream requests "
          f"({len(agent_turns)} agent turns), tool result reached the upstream: {round_trip}, "
          f"final answer printed: {answered}")
    if not ok:
        print("  stdout: " + out[-1500:].replace("\n", "\n  "))
        print("  stderr: " + err[-3000:].replace("\n", "\n  "))
        if agent_turns:
            first = json.loads(agent_turns[0])
            print("  tools declared: " + ", ".join(
                t.get("function", {}).get("name", "?") for t in first.get("tools", [])))
    return ok


def main():
    only = sys.argv[1:]
    tmp = tempfile.mkdtemp(prefix="codex-proxy-clients-")
    stack = Stack(BIN, tmp, CONF, "smoke@example.com")
    results = []
    try:
        for name, make, where, translation in CASES:
            if only and name not in only:
                continue
            ok = run_case(stack, tmp, name, make, where)
            results.append((name, ok, translation))
        time.sleep(1.2)  # access-log lines reach the file within a second
        log = stack.access_log()
        seen = {line.get("translation") for line in log}
        # Codex on its WebSocket transport: the connection's own line (101),
        # written when Codex closed it.
        sockets = [l for l in log if l.get("method") == "GET" and l.get("status") == 101]
        for name, ok, translation in results:
            missing = None
            if ok and translation and translation not in seen:
                missing = f"no {translation} translation"
            if ok and name == "codex-websocket" and not sockets:
                missing = "no WebSocket connection on GET /v1/responses"
            if missing:
                print(f"FAIL {name}: the access log shows {missing}")
                results = [(n, o and n != name, t) for n, o, t in results]
    finally:
        stack.stop()
    failed = [n for n, ok, _ in results if not ok]
    print(f"\n{len(results) - len(failed)}/{len(results)} clients passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    if failed:
        print(f"logs kept in {tmp}")
        sys.exit(1)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
