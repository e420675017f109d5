"""The real gateway binary with two fake upstreams (one full, one chat-only)
on OS-picked loopback ports, a funded user and a key: what the SDK tests
(tests/sdk) and scripts/clients-smoke run clients against. Standard library
only, so the smoke script needs no venv."""

import json
import os
import subprocess
import threading
import urllib.request


def ready(proc, what):
    """Reads stdout until the {"event":"ready"} line; returns it."""
    found = {}

    def read():
        for line in proc.stdout:
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if v.get("event") == "ready":
                found["v"] = v
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(60)
    if "v" not in found:
        proc.kill()
        raise RuntimeError(f"{what} did not start")
    return found["v"]


def http(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=10).read())


class Stack:
    """`conf` is a template with {data}, {fake} and {chat_fake} fields, and
    any in `fields`. `admin` is the admin listener's URL when conf has one."""

    def __init__(self, binary, tmp, conf, email, scheme="http", **fields):
        self.bin = binary
        self.tmp = tmp
        self.procs = []
        try:
            fake = self.spawn([binary, "fake-upstream", "--listen", "127.0.0.1:0"], "fake.log")
            self.fake = "http://" + ready(fake, "fake upstream")["listen"]
            chat = self.spawn([binary, "fake-upstream", "--listen", "127.0.0.1:0", "--chat-only"], "chat-fake.log")
            self.chat_fake = "http://" + ready(chat, "chat-only fake upstream")["listen"]
            self.conf = os.path.join(tmp, "codex-proxy.yaml")
            with open(self.conf, "w") as f:
                f.write(conf.format(data=os.path.join(tmp, "data"), fake=self.fake, chat_fake=self.chat_fake, **fields))
            self.cli("users", "add", email)
            self.cli("credits", "add", email, "100")
            self.key = self.cli("keys", "create", email).strip().splitlines()[-1]
            gw = self.spawn([binary, "serve", "-c", self.conf], "gateway.log")
            r = ready(gw, "gateway")
            self.base = f"{scheme}://" + r["listen"][0]
            self.admin = "http://" + r["admin"] if r.get("admin") else None
        except BaseException:
            self.stop()
            raise

    def spawn(self, cmd, log):
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(os.path.join(self.tmp, log), "w"), text=True)
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    def cli(self, *args):
        return subprocess.run([self.bin, *args, "-c", self.conf], capture_output=True, text=True, check=True).stdout

    def script(self, *behaviors, upstream=None):
        """Queues scripted behaviours on a fake (the full one by default)."""
        http((upstream or self.fake) + "/_fake/script", list(behaviors))

    def reset(self):
        for u in (self.fake, self.chat_fake):
            http(u + "/_fake/reset", {})

    def upstream_requests(self, upstream=None):
        return http((upstream or self.fake) + "/_fake/requests")

    def access_log(self):
        with open(os.path.join(self.tmp, "data", "access.log")) as f:
            return [json.loads(line) for line in f if line.strip()]
