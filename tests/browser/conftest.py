"""The real gateway (console on, open sign-up) behind the fake upstreams, and
Debian's Chromium driven by Playwright for Python (no browser download:
executable_path points at the system binary). Screenshots go to
$SCREENSHOTS (default target/screenshots), printed at the end of the run."""

import os
import sys
import tempfile

import pytest
from playwright.sync_api import sync_playwright

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "lib"))
from gateway_stack import Stack  # noqa: E402

from fake_stripe import SECRET_KEY as STRIPE_KEY, WEBHOOK_SECRET, FakeStripe  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
BIN = os.environ.get("CODEX_PROXY_BIN") or os.path.join(ROOT, "target", "debug", "codex-proxy")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = os.path.abspath(os.environ.get("SCREENSHOTS") or os.path.join(ROOT, "target", "screenshots"))

CONF = """
server:
  listen: ["127.0.0.1:0"]
  threads: 2
  grace_period: 2s
storage:
  data_dir: {data}
  flush_interval: 20ms
admin:
  listen: 127.0.0.1:0
  token: {admin_token}
demo_upstream: never
models:
  - {{id: gpt-4o-mini, display_name: GPT-4o mini, owned_by: openai, price: {{input: 0.15, cached_input: 0.075, output: 0.6}}}}
  - {{id: gpt-5.1-codex, display_name: GPT-5.1-Codex, owned_by: openai, price: {{input: 1.25, cached_input: 0.125, output: 10}}}}
  - {{id: text-embedding-3-small, owned_by: openai, price: {{input: 0.02, output: 0}}}}
  - {{id: claude-sonnet-4-6, display_name: Claude Sonnet 4.6, owned_by: anthropic,
     price: {{input: 3, cached_input: 0.3, cache_write: 3.75, output: 15}}}}
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
plans:
  - {{id: pro, name: Pro, daily_quota: 20, concurrency: 4, duration_days: 30}}
console:
  site_name: codex-proxy
  signup: open
payments:
  stripe: {{secret_key: {stripe_key}, webhook_secret: {stripe_webhook}, api_base: "{stripe}"}}
  packages:
    - {{id: ten, name: 10 credits, credits: 10, prices: {{usd: 10}}}}
    - {{id: pro, name: Pro month, plan: pro, prices: {{usd: 20}}}}
"""

ADMIN_TOKEN = "browser-admin-token-0123456789"

# Chromium as the probe found it to work here: no background traffic to
# Google's hosts, which this machine cannot reach.
CHROMIUM_ARGS = ["--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="session")
def stripe():
    s = FakeStripe()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def stack(stripe):
    s = Stack(
        BIN,
        tempfile.mkdtemp(prefix="codex-proxy-browser-"),
        CONF,
        "operator@example.com",
        admin_token=ADMIN_TOKEN,
        stripe=stripe.url,
        stripe_key=STRIPE_KEY,
        stripe_webhook=WEBHOOK_SECRET,
    )
    yield s
    s.stop()


@pytest.fixture(scope="session")
def browser():
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield p, b
        b.close()
    print(f"\nscreenshots: {SHOTS}")


def shot(page, name):
    path = os.path.join(SHOTS, name + ".png")
    page.screenshot(path=path, full_page=True)
    return path
