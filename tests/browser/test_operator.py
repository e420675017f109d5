"""The operator console and buying credits, in Chromium.

An operator signs in with the admin token and creates a batch of codes; a
new user redeems one and makes a request with the official SDK; the
operator sees the code used and the user's usage, disables a channel (it
shows as disabled, and the API answers 503) and enables it again. A user
buys credits through the fake Stripe checkout page and sees the balance
rise; the operator sees the paid order. Every operator page is saved as a
screenshot, wide and narrow."""

import openai
import pytest

from conftest import ADMIN_TOKEN, shot
from test_journey import no_sideways_scroll

USER = "redeemer@example.com"
BUYER = "buyer@example.com"
PASSWORD = "correct horse battery"


def sign_up(ctx, stack, email):
    page = ctx.new_page()
    page.goto(stack.base + "/console/sign-up")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/dashboard?done=welcome")
    return page


@pytest.fixture(scope="module")
def operator(stack, browser):
    _, b = browser
    ctx = b.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(stack.admin + "/")
    page.wait_for_url("**/sign-in")
    shot(page, "op-01-sign-in")
    page.fill("input[name=token]", ADMIN_TOKEN)
    page.click("form:has(input[name=token]) button[type=submit]")
    page.wait_for_url(stack.admin + "/")
    yield page, errors
    ctx.close()


@pytest.fixture(scope="module")
def batch(operator):
    """A batch of two 3-credit codes, created in the console."""
    page, _ = operator
    page.click("nav.side >> text=Redeem codes")
    page.fill("input[name=credits]", "3")
    page.fill("input[name=count]", "2")
    page.click("form[action='/codes'] button[type=submit]")
    page.wait_for_selector("#new-codes")
    shot(page, "op-03-codes-created")
    codes = page.inner_text("#new-codes code").split()
    assert len(codes) == 2 and all(c.startswith("CPX-") for c in codes), codes
    # Downloaded once, as the page says.
    with page.expect_download() as d:
        page.click("text=Download TXT")
    with open(d.value.path()) as f:
        assert f.read().split() == codes
    return codes


def test_code_redeemed_and_usage_seen_by_the_operator(operator, batch, stack, browser):
    page, errors = operator
    _, b = browser
    # A user redeems the first code and calls the API with a new key.
    ctx = b.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
    user = sign_up(ctx, stack, USER)
    user.goto(stack.base + "/console/redeem")
    user.fill("input[name=code]", batch[0])
    user.click("form.stack button[type=submit]")
    user.wait_for_selector("text=Redeemed: 3.00 credits were added to your balance.")
    user.goto(stack.base + "/console/keys")
    user.fill("input[name=name]", "ci")
    user.click("form.stack button[type=submit]")
    key = user.inner_text("#new-key-value").strip()
    client = openai.OpenAI(base_url=stack.base + "/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    ctx.close()

    # The operator sees the code used: its row reads 1 / 1.
    page.goto(stack.admin + "/codes")
    row = page.locator("table.codes tr", has_text=batch[0][:9])
    assert "1 / 1" in row.inner_text(), row.inner_text()
    other = page.locator("table.codes tr", has_text=batch[1][:9])
    assert "0 / 1" in other.inner_text()
    shot(page, "op-04-codes-list")

    # …finds the user, and sees the request on their page.
    page.click("nav.side >> text=Users")
    page.fill("input[name=q]", "redeemer")
    page.press("input[name=q]", "Enter")
    page.click(f"text={USER}")
    page.wait_for_url("**/users/*")
    assert page.locator("#user-balance .stat").inner_text() != "3", "the request was charged"
    recent = page.locator("h2:has-text('Recent requests') + div table")
    assert "gpt-4o-mini" in recent.inner_text()
    shot(page, "op-05-user")
    page.goto(stack.admin + "/usage?user=" + USER)
    assert page.locator("table", has_text="gpt-4o-mini").count() > 0
    shot(page, "op-06-usage")
    assert not errors, errors


def test_channel_disabled_shows_and_stops_traffic(operator, stack):
    page, errors = operator
    page.goto(stack.admin + "/channels")
    row = page.locator("tr[data-channel=oa]")
    row.locator("button:has-text('Disable')").click()
    page.wait_for_url("**/channels?done=disable")
    assert "disabled" in page.locator("tr[data-channel=oa]").inner_text()
    shot(page, "op-07-channel-disabled")
    client = openai.OpenAI(base_url=stack.base + "/v1", api_key=stack.key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 503
    # Back in service; the test button sends one real request.
    page.locator("tr[data-channel=oa] button:has-text('Enable')").click()
    page.wait_for_url("**/channels?done=enable")
    page.locator("tr[data-channel=an] button:has-text('Test')").click()
    page.wait_for_selector("#test-result")
    assert "Test passed." in page.inner_text("#test-result")
    shot(page, "op-08-channel-test")
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert not errors, errors


def test_buying_credits_through_stripe_checkout(stack, browser, operator, stripe):
    _, b = browser
    ctx = b.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
    page = sign_up(ctx, stack, BUYER)
    page.click("nav.side >> text=Buy credits")
    page.check("input[name=item][value=ten]")
    shot(page, "30-buy-credits")
    page.click("button:has-text('Continue to payment')")
    # Our hand-over page refreshes to the provider's checkout.
    page.wait_for_url(stripe.url + "/pay/*")
    assert page.inner_text("#amount") == "10.00 USD"
    page.click("#pay")
    page.wait_for_url("**/console/billing/orders/*")
    page.wait_for_selector("text=Paid. 10.00 credits added to your account.")
    shot(page, "31-order-paid")
    assert stripe.webhooks == [(200, '{"received":true}')], stripe.webhooks
    page.click("nav.side >> text=Dashboard")
    assert "10" in page.inner_text("#balance"), page.inner_text("#balance")
    ctx.close()

    op, errors = operator
    op.goto(stack.admin + "/orders")
    paid = op.locator("tr", has_text=BUYER)
    assert "paid" in paid.inner_text() and "10.00 USD" in paid.inner_text(), paid.inner_text()
    assert not errors, errors


def test_every_operator_page_wide_and_narrow(operator, stack, browser):
    page, errors = operator
    pages = [
        ("", "op-02-overview"),
        ("/users", "op-11-users"),
        ("/orders", "op-12-orders"),
        ("/audit", "op-13-audit"),
        ("/settings", "op-14-settings"),
    ]
    for path, name in pages:
        page.goto(stack.admin + path + "/" if path == "" else stack.admin + path)
        shot(page, name)
    audit = page.goto(stack.admin + "/audit")
    assert audit.status == 200
    text = page.inner_text("table.audit")
    for action in ["operator.sign_in", "codes.create", "channel.disable", "channel.enable", "channel.test"]:
        assert action in text, action
    # Narrow: the menu scrolls, the page does not.
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ["/", "/users", "/codes", "/channels", "/usage", "/settings"]:
        page.goto(stack.admin + path)
        no_sideways_scroll(page, path)
    page.goto(stack.admin + "/")
    shot(page, "op-15-overview-narrow")
    page.click("nav.side >> text=Users")
    page.click(f"text={USER}")
    shot(page, "op-16-user-narrow")
    page.set_viewport_size({"width": 1280, "height": 860})
    assert not errors, errors


def admin_reload(stack):
    """POST /admin/config/reload; returns (status, answer)."""
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        stack.admin + "/admin/config/reload", data=b"", headers={"authorization": "Bearer " + ADMIN_TOKEN}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_refused_reload_shows_on_the_settings_page(operator, stack):
    page, errors = operator
    with open(stack.conf) as f:
        good = f.read()
    try:
        with open(stack.conf, "w") as f:
            f.write(good + "\ncolour: blue\n")
        status, answer = admin_reload(stack)
        assert status == 422, answer
        page.goto(stack.admin + "/settings")
        notice = page.inner_text("div.note.warn")
        assert "reload was refused" in notice and "colour: unknown section" in notice, notice
        shot(page, "op-17-settings-reload-refused")
        page.set_viewport_size({"width": 390, "height": 844})
        no_sideways_scroll(page, "/settings")
        shot(page, "op-18-settings-reload-refused-narrow")
        page.set_viewport_size({"width": 1280, "height": 860})
        page.goto(stack.admin + "/settings?lang=zh")
        assert "上次重新加载被拒绝" in page.inner_text("div.note.warn")
        shot(page, "op-19-settings-reload-refused-zh")
        page.goto(stack.admin + "/settings?lang=en")
    finally:
        with open(stack.conf, "w") as f:
            f.write(good)
    status, answer = admin_reload(stack)
    assert status == 200, answer
    page.goto(stack.admin + "/settings")
    assert page.locator("div.note.warn").count() == 0
    assert f"(v{answer['version']})" in page.inner_text("main"), page.inner_text("main")
    assert not errors, errors


def test_the_cluster_on_the_settings_page(browser, stripe):
    """A node of a cluster: the settings page names Redis's state, the policy
    and the live nodes, and says so when Redis goes away."""
    import os
    import subprocess
    import tempfile
    import time

    from conftest import BIN, CONF
    from gateway_stack import Stack

    tmp = tempfile.mkdtemp(prefix="codex-proxy-cluster-")
    sock = os.path.join(tmp, "redis.sock")
    redis = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    node = None
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.02)
        conf = CONF.replace("  flush_interval: 20ms", "  flush_interval: 20ms\n  redis_url: unix://" + sock)
        conf += "cluster: {{nodes: 2, on_redis_down: fail_closed, redis_timeout: 100ms}}\n"
        node = Stack(
            BIN,
            tmp,
            conf,
            "operator@example.com",
            admin_token=ADMIN_TOKEN,
            stripe=stripe.url,
            stripe_key="sk_test_x",
            stripe_webhook="whsec_x",
        )
        _, b = browser
        ctx = b.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
        page = ctx.new_page()
        page.goto(node.admin + "/sign-in")
        page.fill("input[name=token]", ADMIN_TOKEN)
        page.click("form:has(input[name=token]) button[type=submit]")
        page.wait_for_url(node.admin + "/")
        page.goto(node.admin + "/settings")
        assert "every limit is counted across the nodes" in page.inner_text("#cluster-state")
        assert "(this node)" in page.inner_text("main")
        shot(page, "op-20-settings-cluster")
        page.set_viewport_size({"width": 390, "height": 844})
        no_sideways_scroll(page, "/settings")
        shot(page, "op-21-settings-cluster-narrow")
        page.set_viewport_size({"width": 1280, "height": 860})
        redis.kill()
        redis.wait()
        page.goto(node.admin + "/settings")
        state = page.inner_text("div.note.warn")
        assert "Redis is unreachable" in state and "fail_closed" in state, state
        assert "unknown until Redis answers" in page.inner_text("main")
        shot(page, "op-22-settings-redis-down")
        ctx.close()
    finally:
        redis.kill()
        if node:
            node.stop()
