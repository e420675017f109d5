"""Instructions per request of a proxy, counted by callgrind: machine noise does
not move them, so two builds (or the gateway and plain Pingora) compare
exactly. Standard library only.

    instructions.py --port P --path /v1/chat/completions --body FILE [--key K] -- CMD...

Starts CMD under valgrind with instrumentation off (it then runs near full
speed), sends --warmup requests over one keep-alive connection, turns
instrumentation on for --requests more, waits for the background work those
requests caused (batched database writes, access log) to finish, turns it
off, stops the process and prints
`<instructions per request> <requests>` on stdout. Every instruction of
every thread of the process counts, the writer thread's included. With
--keep FILE the profile stays for `callgrind_annotate --inclusive=yes FILE`.
"""

import argparse
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time


def wait_port(port, proc, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"nothing listens on {port} after {seconds}s")


def wait_text(path, text, proc, seconds=600):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the process exited with {proc.returncode}")
        if text in open(path, errors="replace").read():
            return
        time.sleep(0.5)
    sys.exit(f"{text!r} did not appear on stderr within {seconds}s")


def send(conn, path, body, headers, n):
    for _ in range(n):
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            sys.exit(f"{path} answered {r.status}: {data[:300]!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--body", required=True, help="file with the request body")
    ap.add_argument("--key")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds of background work counted after the last answer")
    ap.add_argument("--keep", help="also keep the callgrind output here (for callgrind_annotate)")
    ap.add_argument("--wait-stderr", help="before counting, wait until the process writes this on stderr "
                    "(its start-up work in the background is done)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    out = tempfile.mktemp(prefix="callgrind.", suffix=".out")
    err = tempfile.NamedTemporaryFile(prefix="instructions-stderr.", delete=False)
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    try:
        wait_port(a.port, proc)
        if a.wait_stderr:
            wait_text(err.name, a.wait_stderr, proc)
        body = open(a.body, "rb").read()
        headers = {"content-type": "application/json"}
        if a.key:
            headers["authorization"] = f"Bearer {a.key}"
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
        send(conn, a.path, body, headers, a.warmup)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        send(conn, a.path, body, headers, a.requests)
        time.sleep(a.settle)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    os.unlink(err.name)
    text = open(out).read()
    if a.keep:
        os.replace(out, a.keep)
    else:
        os.unlink(out)
    m = re.search(r"^totals: (\d+)", text, re.M) or re.search(r"^summary: (\d+)", text, re.M)
    if not m:
        sys.exit("no totals in the callgrind output")
    print(f"{int(m.group(1)) / a.requests:.0f} {a.requests}")


if __name__ == "__main__":
    main()
