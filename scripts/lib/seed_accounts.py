"""Fills a gateway database with many users, keys and ledger entries, to
measure start-up and the request path at scale. Standard library only.

    seed_accounts.py DB_FILE [--users 100000] [--ledger 1000000]

Each user gets a key (random lookup and hash: they authenticate nothing) and
a top-up; the rest of the ledger is usage charges spread over the users.
The database must exist (run any `codex-proxy` command on the config first).
"""

import argparse
import random
import sqlite3
import string


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--ledger", type=int, default=1_000_000)
    a = ap.parse_args()
    c = sqlite3.connect(a.db)
    c.execute("PRAGMA busy_timeout = 10000")
    first = c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM users").fetchone()[0]
    ids = range(first, first + a.users)
    t = 1_790_000_000_000
    letters = string.ascii_letters + string.digits
    c.executemany("INSERT INTO users(id, email, created_at) VALUES (?, ?, ?)", ((i, f"seed{i}@example.com", t) for i in ids))
    c.executemany(
        "INSERT INTO api_keys(user_id, lookup, key_hash, name, created_at) VALUES (?, ?, ?, 'seed', ?)",
        ((i, "".join(random.choices(letters, k=8)), "%064x" % random.getrandbits(256), t) for i in ids),
    )

    def ledger():
        for n in range(a.ledger):
            user = first + n % a.users
            if n < a.users:
                yield (user, 10_000_000, "topup", "seed", f"seed:{user}", "cli", t)
            else:
                yield (user, -random.randint(1, 900), "usage", "gpt-4o-mini", f"req_seed{n}", "gateway", t + n)

    c.executemany(
        "INSERT INTO ledger(user_id, account, amount, kind, reason, reference, origin, created_at)"
        " VALUES (?, 'credits', ?, ?, ?, ?, ?, ?)",
        ledger(),
    )
    c.commit()
    print(f"seeded {a.users} users and keys, {a.ledger} ledger entries")


if __name__ == "__main__":
    main()
