"""A new user's whole journey in Chromium: docs -> sign up -> redeem a credits
code -> create a key and copy it; then the official openai SDK uses that key;
back in the browser the request is on the Usage page and the balance has
dropped. Also: the Chinese docs, a phone-sized screen, the weight of every
page, and the cc-switch import links with their balance script."""

import base64
import json
import os
import re
import shutil
import subprocess
from urllib.parse import parse_qsl, urlparse

import openai
import pytest

from conftest import shot

EMAIL = "journey@example.com"
PASSWORD = "correct horse battery"
PAGE_BUDGET = 150_000


class Traffic:
    """Every response a page loads: its size, and that it came from us."""

    def __init__(self, page, base):
        self.base = base
        self.items = []
        page.on("requestfinished", self._done)

    def _done(self, request):
        response = request.response()
        body = len(response.body()) if response and response.status < 300 else 0
        headers = sum(len(k) + len(v) + 4 for k, v in (response.headers.items() if response else []))
        self.items.append((request.url, body + headers))

    def take(self):
        items, self.items = self.items, []
        return items


def check_weight(traffic, what, budget=PAGE_BUDGET):
    items = traffic.take()
    foreign = [u for u, _ in items if not u.startswith(traffic.base) and not u.startswith("data:")]
    assert not foreign, f"{what} loaded from other hosts: {foreign}"
    total = sum(n for _, n in items)
    assert total < budget, f"{what}: {total} bytes"
    return total


def no_sideways_scroll(page, what):
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{what} scrolls sideways on a narrow screen: {width}"


@pytest.fixture(scope="module")
def journey(stack, browser):
    """Runs the journey once; the tests below check its parts."""
    p, b = browser
    code = stack.cli("codes", "create", "--credits", "5").split()[-1]
    assert code.startswith("CPX-"), code
    ctx = b.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.base)
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    traffic = Traffic(page, stack.base)
    state = {"page": page, "ctx": ctx, "errors": errors, "code": code}

    # 1. The docs, then their link to sign up.
    page.goto(stack.base + "/")
    shot(page, "01-docs-home")
    page.click("ol.steps >> text=Create an account")
    page.wait_for_url("**/console/sign-up")
    shot(page, "02-sign-up")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/dashboard?done=welcome")
    shot(page, "03-dashboard-new")

    # 2. Redeem the credits code.
    page.click("nav.side >> text=Redeem")
    page.fill("input[name=code]", code)
    page.click("form.stack button[type=submit]")
    page.wait_for_selector("text=Redeemed: 5.00 credits were added to your balance.")
    shot(page, "04-redeemed")

    # 3. Create a key, see it once, copy it.
    page.click(".note.ok >> text=Create API key")
    page.wait_for_url("**/console/keys")
    page.fill("input[name=name]", "laptop")
    page.click("form.stack button[type=submit]")
    page.wait_for_selector("#new-key-value")
    # Everything the journey loaded came from the gateway.
    check_weight(traffic, "the journey", budget=10 * PAGE_BUDGET)
    key = page.inner_text("#new-key-value").strip()
    page.click("button[data-copy='#new-key-value']")
    page.wait_for_selector("button[data-copy='#new-key-value']:has-text('Copied')")
    state["clipboard"] = page.evaluate("() => navigator.clipboard.readText()")
    state["links"] = {
        el.get_attribute("data-app"): el.get_attribute("href") for el in page.query_selector_all("a[data-app]")
    }
    shot(page, "05-key-created")
    state["key"] = key
    return state


def test_key_is_shown_once_and_copies(journey, stack):
    key = journey["key"]
    assert re.fullmatch(r"codex_[A-Za-z0-9]{40}", key), key
    assert journey["clipboard"] == key
    page = journey["page"]
    page.goto(stack.base + "/console/keys")
    assert key not in page.content(), "the key is not shown again"
    assert key[:14] in page.content()


def test_the_sdk_uses_the_key_and_the_console_shows_it(journey, stack):
    page = journey["page"]
    client = openai.OpenAI(base_url=stack.base + "/v1", api_key=journey["key"], max_retries=0, timeout=30)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content
    with client.responses.stream(model="gpt-5.1-codex", input="hi") as s:
        assert s.get_final_response().status == "completed"
    account = client.get("/account", cast_to=object)
    balance = float(account["balance"])
    assert 4.9 < balance < 5.0, account

    page.goto(stack.base + "/console/usage")
    page.wait_for_selector("table.requests")
    rows = page.inner_text("table.requests")
    assert "gpt-4o-mini" in rows and "gpt-5.1-codex" in rows, rows
    assert "2" == page.inner_text(".cards .card:nth-child(2) .stat").strip()
    shot(page, "06-usage")
    page.goto(stack.base + "/console/dashboard")
    shown = page.inner_text("#balance .stat").strip()
    assert float(shown) == pytest.approx(balance, abs=1e-6), (shown, balance)
    assert float(shown) < 5.0, "the balance dropped"
    assert "gpt-4o-mini" in page.inner_text("table.requests")
    shot(page, "07-dashboard-used")
    for path, name in (("/console/models", "08-models"), ("/console/billing", "09-buy-credits"),
                       ("/console/account", "10-account"), ("/docs/claude-code", "11-docs-claude-code"),
                       ("/docs/models", "12-docs-pricing")):
        page.goto(stack.base + path)
        shot(page, name)
    assert not journey["errors"], journey["errors"]


def test_csv_export_downloads(journey, stack):
    page = journey["page"]
    page.goto(stack.base + "/console/usage")
    with page.expect_download() as d:
        page.click("text=Export CSV")
    path = d.value.path()
    lines = open(path).read().splitlines()
    assert lines[0].startswith("time,request_id,key,model")
    assert len(lines) == 3, lines


def test_pages_are_light_and_local(journey, browser, stack):
    """Each page on a cold cache, with everything it loads: under 150 KB, and
    nothing from another host."""
    p, b = browser
    signed_in = journey["ctx"].storage_state()
    for path in ("/", "/docs/code", "/docs/cc-switch", "/docs/models", "/console/dashboard", "/console/keys",
                 "/console/usage", "/console/redeem", "/console/account"):
        ctx = b.new_context(storage_state=signed_in)
        page = ctx.new_page()
        traffic = Traffic(page, stack.base)
        page.goto(stack.base + path)
        page.wait_for_load_state("networkidle")
        print(f"{path}: {check_weight(traffic, path)} bytes")
        ctx.close()


def test_chinese_docs_and_the_switch(browser, stack):
    p, b = browser
    ctx = b.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
    page = ctx.new_page()
    page.goto(stack.base + "/docs/codex")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert page.inner_text("h1") == "Codex CLI"
    assert "手动配置" in page.content()
    shot(page, "13-docs-codex-zh")
    page.goto(stack.base + "/")
    assert page.inner_text("h1") == "快速开始"
    shot(page, "14-docs-home-zh")
    page.click("a.lang")
    assert page.inner_text("h1") == "Get started"
    page.goto(stack.base + "/docs/errors")
    assert page.inner_text("h1") == "Errors", "the choice is remembered"
    ctx.close()


def test_phone_screens(browser, stack, journey):
    p, b = browser
    phone = dict(p.devices["iPhone 13"])
    phone["device_scale_factor"] = 2
    ctx = b.new_context(**phone)
    page = ctx.new_page()
    for path, name in (("/", "docs-home"), ("/docs/codex", "docs-codex"), ("/docs/endpoints", "docs-endpoints")):
        page.goto(stack.base + path)
        no_sideways_scroll(page, path)
        shot(page, f"20-phone-{name}")
    page.goto(stack.base + "/console/sign-in")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/dashboard")
    for path, name in (("/console/dashboard", "dashboard"), ("/console/keys", "keys"),
                       ("/console/usage", "usage"), ("/console/redeem", "redeem")):
        page.goto(stack.base + path)
        no_sideways_scroll(page, path)
        shot(page, f"21-phone-{name}")
    ctx.close()


def test_ccswitch_links_and_balance_script(journey, stack):
    """The import links carry the right endpoint per client, and the balance
    script inside them works against this gateway when run as cc-switch runs
    it: placeholders replaced, evaluated, its request sent, its extractor
    applied."""
    node = shutil.which("node")
    assert node, "node is needed to run the cc-switch usage script"
    links = journey["links"]
    assert set(links) == {"codex", "claude", "opencode", "openclaw"}
    results = {}
    for app, link in links.items():
        u = urlparse(link)
        assert (u.scheme, u.netloc, u.path) == ("ccswitch", "v1", "/import"), link
        q = dict(parse_qsl(u.query))
        assert q["resource"] == "provider" and q["app"] == app and q["apiKey"] == journey["key"]
        assert q["endpoint"] == (stack.base if app == "claude" else stack.base + "/v1"), q["endpoint"]
        assert q["usageEnabled"] == "true"
        script = base64.urlsafe_b64decode(q["usageScript"] + "=" * (-len(q["usageScript"]) % 4)).decode()
        script = script.replace("{{baseUrl}}", q["endpoint"]).replace("{{apiKey}}", q["apiKey"])
        runner = """
const spec = eval(process.argv[1]);
fetch(spec.request.url, {method: spec.request.method, headers: spec.request.headers})
  .then(r => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
  .then(body => console.log(JSON.stringify(spec.extractor(body))))
  .catch(e => { console.error(e); process.exit(1); });
"""
        out = subprocess.run([node, "-e", runner, script], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        results[app] = json.loads(out.stdout)
    for app, r in results.items():
        assert r["isValid"] is True and r["unit"] == "credits", (app, r)
        assert isinstance(r["remaining"], (int, float)) and 0 < r["remaining"] <= 5, (app, r)
    assert len({json.dumps(r, sort_keys=True) for r in results.values()}) == 1, "same answer from every endpoint"
