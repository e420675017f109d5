"""Starts the real gateway binary and the fake upstream on OS-picked loopback
ports for the SDK tests. CODEX_PROXY_BIN points at the binary (scripts/test
sets it)."""

import json
import os
import subprocess
import tempfile
import threading
import urllib.request
from dataclasses import dataclass, field

import anthropic
import openai
import pytest

BIN = os.environ.get("CODEX_PROXY_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "target", "debug", "codex-proxy"
)

CONF = """
server:
  listen: ["127.0.0.1:0"]
  threads: 2
  grace_period: 2s
storage:
  data_dir: {data}
  flush_interval: 20ms
admin:
  listen: "off"
demo_upstream: never
models:
  - {{id: gpt-4o-mini, owned_by: openai, price: {{input: 0.15, cached_input: 0.075, output: 0.6}}}}
  - {{id: gpt-5.1-codex, owned_by: openai, price: {{input: 1.25, cached_input: 0.125, output: 10}}}}
  - {{id: text-embedding-3-small, owned_by: openai, price: {{input: 0.02, output: 0}}}}
  - {{id: claude-sonnet-4-6, display_name: Claude Sonnet 4.6, owned_by: anthropic,
     price: {{input: 3, cached_input: 0.3, cache_write: 3.75, output: 15}}}}
  - {{id: qwen3-coder, owned_by: qwen, price: {{input: 0.5, cached_input: 0.05, output: 2}}}}
channels:
  - name: oa
    kind: openai
    base_url: {fake}/v1
    api_key: sk-test
    models: [gpt-4o-mini, gpt-5.1-codex, text-embedding-3-small]
    health_check: {{enabled: false}}
  - name: an
    kind: anthropic
    base_url: {fake}
    api_key: sk-ant-test
    models: [claude-sonnet-4-6]
    health_check: {{enabled: false}}
  - name: qc
    kind: openai-chat
    base_url: {chat_fake}/v1
    api_key: sk-chat
    models: [qwen3-coder]
    health_check: {{enabled: false}}
"""


def _ready(proc, what):
    """Reads stdout until the {"event":"ready"} line."""
    result = {}

    def read():
        for line in proc.stdout:
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if v.get("event") == "ready":
                result["v"] = v
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(60)
    if "v" not in result:
        proc.kill()
        raise RuntimeError(f"{what} did not start")
    return result["v"]


@dataclass
class Stack:
    base: str  # http://127.0.0.1:PORT
    fake: str
    chat_fake: str  # a chat-only upstream (404 on /v1/responses)
    key: str
    conf: str
    procs: list = field(default_factory=list)

    def cli(self, *args):
        out = subprocess.run([BIN, *args, "-c", self.conf], capture_output=True, text=True, check=True)
        return out.stdout

    def script(self, *behaviors, upstream=None):
        req = urllib.request.Request(
            (upstream or self.fake) + "/_fake/script",
            data=json.dumps(list(behaviors)).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(req, timeout=10).read()

    def upstream_requests(self, upstream=None):
        return json.loads(urllib.request.urlopen((upstream or self.fake) + "/_fake/requests", timeout=10).read())


@pytest.fixture(scope="session")
def stack():
    tmp = tempfile.mkdtemp(prefix="codex-proxy-sdk-")
    fake = subprocess.Popen(
        [BIN, "fake-upstream", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    fake_addr = "http://" + _ready(fake, "fake upstream")["listen"]
    chat_fake = subprocess.Popen(
        [BIN, "fake-upstream", "--listen", "127.0.0.1:0", "--chat-only"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    chat_addr = "http://" + _ready(chat_fake, "chat-only fake upstream")["listen"]
    conf = os.path.join(tmp, "codex-proxy.yaml")
    with open(conf, "w") as f:
        f.write(CONF.format(data=os.path.join(tmp, "data"), fake=fake_addr, chat_fake=chat_addr))
    subprocess.run([BIN, "users", "add", "sdk@example.com", "-c", conf], check=True, capture_output=True)
    subprocess.run([BIN, "credits", "add", "sdk@example.com", "100", "-c", conf], check=True, capture_output=True)
    key = subprocess.run(
        [BIN, "keys", "create", "sdk@example.com", "-c", conf], check=True, capture_output=True, text=True
    ).stdout.strip().splitlines()[-1]
    gw = subprocess.Popen(
        [BIN, "serve", "-c", conf],
        stdout=subprocess.PIPE,
        stderr=open(os.path.join(tmp, "gateway.log"), "w"),
        text=True,
    )
    addr = _ready(gw, "gateway")["listen"][0]
    s = Stack(base=f"http://{addr}", fake=fake_addr, chat_fake=chat_addr, key=key, conf=conf, procs=[gw, fake, chat_fake])
    yield s
    for p in s.procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture
def oa(stack):
    return openai.OpenAI(base_url=stack.base + "/v1", api_key=stack.key, max_retries=0, timeout=30)


@pytest.fixture
def an(stack):
    # The Anthropic SDK takes the root URL (no /v1) and sends Bearer for api_key.
    return anthropic.Anthropic(base_url=stack.base, api_key=stack.key, max_retries=0, timeout=30)
