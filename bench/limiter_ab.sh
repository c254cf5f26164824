#!/usr/bin/env bash
# The rate limiter's cost, A/B interleaved: comet with the limiter on (every call counted by
# every rule that applies, echo included, ceilings no load reaches) and with its rules off,
# alternated PAIRS times so drift on a noisy machine hits both alike. Prints the medians.
#   PAIRS=5 SHAPES="10x10 100x1" bench/limiter_ab.sh        # S2 echo, clients x in flight
#   SCENARIO=chat PAIRS=3 bench/limiter_ab.sh               # S9, 1,000 rooms of 10 at 1,000/s
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins >/dev/null
PAIRS=${PAIRS:-5}
SCENARIO=${SCENARIO:-echo}
SHAPES=${SHAPES:-"1x1 10x10 100x1 100x10"}
[ "$SCENARIO" = chat ] && SHAPES=${CHAT_RATE:-1000}
rules="IP User Connection User_By_Method Connection_By_Method"
on=(COMET_RATE_LIMIT_TEST_HANDLERS=1)
off=()
for r in $rules; do
  on+=("OVERWRITE_SETTING_DDP_Rate_Limit_${r}_Requests_Allowed=2000000000")
  off+=("OVERWRITE_SETTING_DDP_Rate_Limit_${r}_Enabled=false")
done
one() { # shape env...
  local shape=$1; shift
  local dir; dir=$(mktemp -d)
  # As bench/run.sh starts it: heartbeats off and bcrypt cost 4 for S9's set-up, no caps
  # per address or user (one load generator makes every connection).
  env "$@" COMET_TEST_HANDLERS=1 PORT=3912 BIND_IP=127.0.0.1 COMET_WORKER_THREADS=1 RUST_LOG=warn \
    COMET_DATA_DIR="$dir" OVERWRITE_SETTING_DDP_Rate_Limit_Login_Enabled=false \
    COMET_MAX_SESSIONS_PER_ADDRESS=0 COMET_MAX_SUBSCRIPTIONS_PER_USER=1000000 \
    ADMIN_USERNAME=benchadmin ADMIN_PASS=bench-admin-pass ADMIN_EMAIL=admin@bench.example \
    COMET_BCRYPT_COST=4 COMET_HEARTBEAT_INTERVAL_MS=0 \
    taskset -c 0 target/release/comet 2>/dev/null &
  local pid=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/3912) 2>/dev/null && break; sleep 0.1; done
  local url=ws://127.0.0.1:3912/websocket
  if [ "$SCENARIO" = chat ]; then
    taskset -c 1 target/release/comet-bench chat --mode small --rooms 1000 --room-size 10 \
      --rate "$shape" --secs 8 --warmup-secs 3 --url "$url" --pid "$pid" --label "S9 small $shape/s"
  else
    taskset -c 1 target/release/comet-bench echo --clients "${shape%x*}" --inflight "${shape#*x}" \
      --secs 6 --warmup-secs 2 --url "$url" --pid "$pid" --label "S2 echo $shape"
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$dir"
}
for shape in $SHAPES; do
  for _ in $(seq "$PAIRS"); do
    one "$shape" "${on[@]}" | sed 's/^{/{"limiter":"on",/'
    one "$shape" "${off[@]}" | sed 's/^{/{"limiter":"off",/'
  done
done | python3 -c '
import sys, json, statistics
rows = {}
for line in sys.stdin:
    d = json.loads(line)
    assert d.get("refused", 0) == 0, d
    rows.setdefault((d["label"], d["limiter"]), []).append(d)
print("| scenario | limiter | µs server CPU per call or message (median, spread) | calls or messages/s (median) | last-member p99 ms |")
print("|---|---|---|---|---|")
for (label, mode), v in sorted(rows.items()):
    us = [x.get("server_cpu_us_per_call", x.get("server_cpu_us_per_message")) for x in v]
    rate = [x.get("calls_per_sec", x.get("messages_per_sec")) for x in v]
    p99 = [x["last_member_p99_ms"] for x in v if "last_member_p99_ms" in x]
    tail = f"{statistics.median(p99):.1f}" if p99 else "-"
    print(f"| {label} | {mode} | {statistics.median(us):.2f} ({min(us):.2f}-{max(us):.2f}, n={len(v)}) | {statistics.median(rate):.0f} | {tail} |")
'
