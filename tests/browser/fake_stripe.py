"""A fake Stripe for the browser tests, on an OS-picked loopback port.

It answers `POST /v1/checkout/sessions` as Stripe does (bearer secret key,
form-encoded body, one session per idempotency key) and serves the checkout
page the user is sent to. Pressing *Pay* there does what Stripe does after a
payment: it posts a signed `checkout.session.completed` event to the
gateway's webhook (the origin of the session's success_url), then sends the
browser to the success_url.
"""

import hashlib
import hmac
import html
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlparse

SECRET_KEY = "sk_test_browser_0123456789"
WEBHOOK_SECRET = "whsec_browser_0123456789"


def signature(payload, secret, t):
    """The Stripe-Signature header for `payload` signed at `t`."""
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


class FakeStripe:
    def __init__(self):
        self.sessions = {}
        self.by_key = {}
        self.webhooks = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()

    def create(self, key, form):
        with self.lock:
            sid = self.by_key.get(key) or f"cs_test_{len(self.sessions) + 1}"
            self.by_key[key] = sid
            self.sessions[sid] = form
        return {
            "id": sid,
            "object": "checkout.session",
            "status": "open",
            "payment_status": "unpaid",
            "url": f"{self.url}/pay/{sid}",
            "client_reference_id": form.get("client_reference_id"),
            "amount_total": int(form.get("line_items[0][price_data][unit_amount]", "0")),
            "currency": form.get("line_items[0][price_data][currency]"),
        }

    def pay(self, sid):
        """Stripe's side of a completed payment: the signed webhook. Returns
        where the browser goes next."""
        form = self.sessions[sid]
        order = form["client_reference_id"]
        event = {
            "id": f"evt_{sid}",
            "object": "event",
            "type": "checkout.session.completed",
            "data": {
                "object": {
                    "id": sid,
                    "object": "checkout.session",
                    "client_reference_id": order,
                    "payment_status": "paid",
                    "status": "complete",
                    "amount_total": int(form["line_items[0][price_data][unit_amount]"]),
                    "currency": form["line_items[0][price_data][currency]"],
                    "metadata": {"order_id": order},
                }
            },
        }
        payload = json.dumps(event)
        success = form["success_url"]
        origin = "{0.scheme}://{0.netloc}".format(urlparse(success))
        req = urllib.request.Request(
            origin + "/payments/stripe/webhook",
            data=payload.encode(),
            headers={"content-type": "application/json", "stripe-signature": signature(payload, WEBHOOK_SECRET, int(time.time()))},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            self.webhooks.append((r.status, r.read().decode()))
        return success

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body, kind="application/json", headers=()):
                data = body.encode()
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def body(self):
                return self.rfile.read(int(self.headers.get("content-length") or 0)).decode()

            def do_POST(self):
                path = urlparse(self.path).path
                if path == "/v1/checkout/sessions":
                    if self.headers.get("authorization") != f"Bearer {SECRET_KEY}":
                        return self.reply(401, json.dumps({"error": {"message": "Invalid API Key provided"}}))
                    form = dict(parse_qsl(self.body()))
                    session = fake.create(self.headers.get("idempotency-key", ""), form)
                    return self.reply(200, json.dumps(session))
                if path.startswith("/pay/") and path[5:] in fake.sessions:
                    self.body()
                    return self.reply(303, "", "text/plain", [("location", fake.pay(path[5:]))])
                self.reply(404, json.dumps({"error": {"message": "Unrecognized request URL"}}))

            def do_GET(self):
                sid = urlparse(self.path).path.removeprefix("/pay/")
                form = fake.sessions.get(sid)
                if form is None:
                    return self.reply(404, "no such session", "text/plain")
                amount = int(form["line_items[0][price_data][unit_amount]"]) / 100
                currency = form["line_items[0][price_data][currency]"].upper()
                name = html.escape(form["line_items[0][price_data][product_data][name]"])
                page = (
                    "<!DOCTYPE html><html><head><meta charset=utf-8><title>Fake Stripe Checkout</title></head>"
                    f"<body><h1>Fake Stripe Checkout</h1><p id=item>{name}</p>"
                    f"<p id=amount>{amount:.2f} {currency}</p>"
                    f"<form method=post action=/pay/{sid}><button id=pay type=submit>Pay</button></form>"
                    "</body></html>"
                )
                self.reply(200, page, "text/html; charset=utf-8")

        return Handler
