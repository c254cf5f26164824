#!/usr/bin/env bash
# Installs what the tests need beyond Rust: Debian's Chromium and Firefox (browser tests) and the
# compat-suite's Node packages (exactly as locked). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "install-test-deps: need root for: $*" >&2; return 1; fi
}

# The browser tests and the broker: Debian's Chromium and Firefox ESR, and a colour emoji font so the
# screenshots show the reactions as a person sees them.
browsers=()
command -v chromium >/dev/null 2>&1 || browsers+=(chromium)
command -v firefox-esr >/dev/null 2>&1 || browsers+=(firefox-esr)
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || browsers+=(fonts-noto-color-emoji)
# The several-instances tests: a real NATS server (tests start their own; the package's
# service, where systemd runs it, is not used).
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || browsers+=(nats-server)
if [ "${#browsers[@]}" -gt 0 ]; then
  echo "install-test-deps: installing Debian's ${browsers[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${browsers[@]}" >/dev/null
fi

if ! command -v node >/dev/null 2>&1; then
  echo "install-test-deps: installing Debian's nodejs and npm"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

(cd compat-suite && npm ci --no-audit --no-fund --loglevel=error)

# The MongoDB wire harness: mockupdb and its client side in a virtual environment of its own.
venv=tests/mongo_wire/.venv
if ! "$venv/bin/python" -c "import mockupdb, websocket, pytest" >/dev/null 2>&1; then
  echo "install-test-deps: installing the MongoDB wire harness into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/mongo_wire/requirements.txt
fi

# A real S3-compatible server for the upload storage tests: moto's server, in a virtual
# environment of its own.
s3venv=tests/s3/.venv
if ! [ -x "$s3venv/bin/moto_server" ]; then
  echo "install-test-deps: installing the S3 test server (moto) into $s3venv"
  python3 -m venv "$s3venv"
  "$s3venv/bin/pip" install --quiet --disable-pip-version-check -r tests/s3/requirements.txt
fi
