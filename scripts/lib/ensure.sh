# Shared set-up for scripts/*: installs what a fresh machine lacks.
# Sourced, not executed.

# Runs a command as root (directly, or through sudo when available).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

# Debian packages, installed only when the command is missing.
ensure_pkg() { # ensure_pkg COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "== installing $2 (for $1)" >&2
  if [ -z "${_apt_updated:-}" ]; then as_root apt-get update -qq; _apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$2" >/dev/null
}

ensure_build_deps() {
  # Pingora's build needs cmake (libz-ng-sys) and a C compiler.
  ensure_pkg cmake cmake
  ensure_pkg cc gcc
  if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; else
      echo "== installing Rust (rustup)" >&2
      curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
      export PATH="$HOME/.cargo/bin:$PATH"
    fi
  fi
}

# Debian's Chromium for the browser tests (Playwright drives it through
# executable_path: no browser download), a CJK font so Chinese pages render
# in screenshots, and Node for the cc-switch usage script.
ensure_browser() {
  ensure_pkg chromium chromium
  ensure_pkg node nodejs
  if ! fc-list :lang=zh 2>/dev/null | grep -q .; then
    if [ -z "${_apt_updated:-}" ]; then as_root apt-get update -qq; _apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq fonts-wqy-zenhei >/dev/null
  fi
}

# A Python venv in .venv with the SDKs and Playwright the tests use.
ensure_venv() {
  local venv="${VENV:-$PWD/.venv}"
  if [ ! -x "$venv/bin/python" ]; then
    ensure_pkg python3 python3
    python3 -m venv "$venv" 2>/dev/null || { ensure_pkg false python3-venv; python3 -m venv "$venv"; }
  fi
  if ! "$venv/bin/python" -c 'import openai, anthropic, pytest, playwright' 2>/dev/null; then
    echo "== installing openai, anthropic, pytest, playwright into $venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check openai anthropic pytest playwright
  fi
  VENV_PY="$venv/bin/python"
}

# PostgreSQL's server binaries (Debian keeps them out of PATH, in
# /usr/lib/postgresql/VERSION/bin); installs the package when missing.
pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }; done
  if command -v pg_ctl >/dev/null 2>&1; then dirname "$(command -v pg_ctl)"; return 0; fi
  return 1
}

ensure_postgres() {
  pg_bindir >/dev/null && return 0
  echo "== installing postgresql (for the PostgreSQL backend's tests)" >&2
  if [ -z "${_apt_updated:-}" ]; then as_root apt-get update -qq; _apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
  pg_bindir >/dev/null
}

# A private PostgreSQL for the suite's second pass: a temporary directory, a
# Unix socket only (no port), durability off (test data), stopped on exit.
# PostgreSQL refuses to run as root, so under root it runs as `postgres`.
start_test_postgres() {
  local bin run=()
  bin=$(pg_bindir)
  PG_TEST_DIR=$(mktemp -d)
  if [ "$(id -u)" = 0 ]; then chown postgres "$PG_TEST_DIR"; run=(runuser -u postgres --); fi
  "${run[@]}" "$bin/initdb" -D "$PG_TEST_DIR/data" -A trust -U codex --no-sync -E UTF8 >/dev/null
  "${run[@]}" "$bin/pg_ctl" -D "$PG_TEST_DIR/data" -l "$PG_TEST_DIR/log" -w -o \
    "-k $PG_TEST_DIR -c listen_addresses='' -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_wal_size=256MB -c max_connections=300" \
    start >/dev/null
  PG_TEST_RUN="${run[*]:-}"
  export CODEX_PROXY_TEST_PG="postgres://codex@localhost/postgres?host=$PG_TEST_DIR"
}

stop_test_postgres() {
  [ -n "${PG_TEST_DIR:-}" ] || return 0
  $PG_TEST_RUN "$(pg_bindir)/pg_ctl" -D "$PG_TEST_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_TEST_DIR"
  PG_TEST_DIR=
}
