"""Starts the real gateway binary and the fake upstreams on OS-picked loopback
ports for the SDK tests (scripts/lib/gateway_stack.py). CODEX_PROXY_BIN points
at the binary (scripts/test sets it)."""

import os
import sys
import tempfile

import anthropic
import openai
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "lib"))
from gateway_stack import Stack  # noqa: E402

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


@pytest.fixture(scope="session")
def stack():
    s = Stack(BIN, tempfile.mkdtemp(prefix="codex-proxy-sdk-"), CONF, "sdk@example.com")
    yield s
    s.stop()


@pytest.fixture
def oa(stack):
    return openai.OpenAI(base_url=stack.base + "/v1", api_key=stack.key, max_retries=0, timeout=30)


@pytest.fixture
def an(stack):
    # The Anthropic SDK takes the root URL (no /v1) and sends Bearer for api_key.
    return anthropic.Anthropic(base_url=stack.base, api_key=stack.key, max_retries=0, timeout=30)
