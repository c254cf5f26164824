#!/usr/bin/env bash
# Side-by-side benchmark: comet and the Node peer (mongodb-livedata-server, Meteor's ddp-server)
# on this machine. Each server is pinned to core 0 (comet with one worker thread), the Rust load
# generator to core 1. Every scenario runs RUNS times on a fresh server; the median is reported.
#
#   bench/run.sh            # S1 idle sessions and S2 method round trips
#   RUNS=5 bench/run.sh     # more runs
#   SCENARIOS="echo" bench/run.sh
#   SCENARIOS=fanout FANOUT_RATES="50 100" bench/run.sh   # S3 fan-out to 1000 subscribers
#   SCENARIOS=fanout FANOUT_CLIENTS="100 10000" bench/run.sh   # other subscriber counts
#   SCENARIOS=mergebox bench/run.sh                        # S4 mergebox stress
#   SCENARIOS=changes bench/run.sh                         # S7 change-source cost
#   SCENARIOS=initial bench/run.sh                         # S8 50 MB initial result set
#   SCENARIOS="login loginping" bench/run.sh               # logins (bcrypt cost 10)
#   SCENARIOS=chat bench/run.sh                            # S9 chat path (sendMessage -> stream)
#   SCENARIOS=chat SERVERS=comet bench/run.sh              # S9 on comet alone
#   SCENARIOS=chat SERVERS=comet CHAT_MODES=small CHAT_RATE=1000 bench/run.sh  # small rooms only
#   COMET_BIN=/path/to/other/release bench/run.sh          # another build of comet (A/B)
#   PASSTHROUGH_HOOK=1 SERVERS=comet SCENARIOS=chat bench/run.sh  # a hook at every point
#   PLUGIN=node SERVERS=comet SCENARIOS=chat bench/run.sh  # one pass-through plugin (node|python)
#   PLUGIN=late LATE_MS=100 SERVERS=comet SCENARIOS=chat bench/run.sh  # one that misses every deadline
#   PLUGIN=node PLUGIN_CORE=1 ...                           # the plugin off comet's core
#   SCENARIOS=presence bench/run.sh                        # S10 presence storm
#   LIMITER=off SERVERS=comet SCENARIOS=echo bench/run.sh  # the rate limiter's rules off
#   SCENARIOS=cluster bench/run.sh                         # S12: three instances over NATS
#   SCENARIOS=cluster CHAT_MODES=small bench/run.sh        # S12 small rooms only
#   TYPING=1 SCENARIOS=cluster bench/run.sh                # S12 with a typing event per message
#   BROKER=0 SCENARIOS=cluster bench/run.sh                # S12's instances without NATS
#   BIG_RATE=50 SCENARIOS="chat cluster" CHAT_MODES=big bench/run.sh  # the big room, slower
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-"idle echo"}
OUT=bench/out/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"

cargo build --release --bins >/dev/null
(cd bench/peer && npm ci --no-audit --no-fund --loglevel=error)
ulimit -n "$(ulimit -Hn)"

PORT_COMET=3901
PORT_PEER=4001
SERVER_PID=

# The settings of the rate limiter for LIMITER=on|off, as OVERWRITE_SETTING_ variables.
limiter_env() {
  local rules="IP User Connection User_By_Method Connection_By_Method"
  if [ "${LIMITER:-on}" = off ]; then
    for r in $rules; do echo "OVERWRITE_SETTING_DDP_Rate_Limit_${r}_Enabled=false"; done
    echo "OVERWRITE_SETTING_API_Enable_Rate_Limiter=false"
  else
    for r in $rules; do echo "OVERWRITE_SETTING_DDP_Rate_Limit_${r}_Requests_Allowed=2000000000"; done
    echo "OVERWRITE_SETTING_API_Enable_Rate_Limiter_Limit_Calls_Default=2000000000"
    echo "OVERWRITE_SETTING_Rate_Limiter_Limit_RegisterUser=2000000000"
  fi
}

# A plugin folder for PLUGIN=node|python|late (none without PLUGIN): one plugin at
# MessageWillBePosted that lets everything through, or (late) one that answers after every
# deadline of LATE_MS, failing open.
plugin_dir() {
  [ -z "${PLUGIN:-}" ] && return 0
  local dir="$OUT/plugins" sdk=plugins/sdk
  rm -rf "$dir"; mkdir -p "$dir/bench-$PLUGIN"
  cp "$sdk/python/comet_plugin.py" "$sdk/node/comet-plugin.js" bench/plugins/pass.js \
    tests/plugins/misbehave.py "$dir/bench-$PLUGIN/"
  local command='["python3", "misbehave.py", "pass"]' deadline=2000
  case "$PLUGIN" in
    node) command='["node", "pass.js"]' ;;
    late) command='["python3", "misbehave.py", "sleep"]'; deadline=${LATE_MS:-100} ;;
  esac
  # PLUGIN_CORE=1 runs the plugin on the load generator's core instead of comet's.
  if [ -n "${PLUGIN_CORE:-}" ]; then command="[\"taskset\", \"-c\", \"$PLUGIN_CORE\", ${command#[}"; fi
  printf '{"id": "bench-%s", "version": "1", "server": {"command": %s}, "hooks": ["MessageWillBePosted"], "hook_deadline_ms": %s}\n' \
    "$PLUGIN" "$command" "$deadline" >"$dir/bench-$PLUGIN/plugin.json"
  echo "$dir"
}
plugin_env() {
  [ -n "${PLUGIN:-}" ] && echo "COMET_PLUGIN_DIR=$(plugin_dir)"
  return 0
}

# The environment of a benchmarked comet on port $1 (its store in DATA_DIR).
comet_env() {
  limiter_env
  echo COMET_RATE_LIMIT_TEST_HANDLERS=1 COMET_TEST_HANDLERS=1 PORT="$1" BIND_IP=127.0.0.1 \
    COMET_WORKER_THREADS=1 RUST_LOG=warn COMET_DATA_DIR="$DATA_DIR" \
    OVERWRITE_SETTING_DDP_Rate_Limit_Login_Enabled=false \
    COMET_MAX_SESSIONS_PER_ADDRESS=0 COMET_MAX_SUBSCRIPTIONS_PER_USER=1000000 \
    ADMIN_USERNAME=benchadmin ADMIN_PASS=bench-admin-pass ADMIN_EMAIL=admin@bench.example \
    COMET_BCRYPT_COST="${BCRYPT_COST:-10}" COMET_HEARTBEAT_INTERVAL_MS="${HEARTBEAT_MS:-15000}" \
    COMET_PRESENCE_GRACE_MS="${PRESENCE_GRACE_MS:-3000}"
}

start_server() {
  case "$1" in
    comet)
      # A fresh store per run; the login limit off, as the peer has none. The rate limiter
      # (LIMITER=on, the default) checks and counts every call as in production, with
      # ceilings no load here reaches, so what is measured is its cost, not its refusals;
      # LIMITER=off switches its rules off for the comparison.
      DATA_DIR=$(mktemp -d)
      env $(comet_env $PORT_COMET) COMET_BENCH_PASSTHROUGH_HOOK=${PASSTHROUGH_HOOK:-0} $(plugin_env) \
        taskset -c 0 "${COMET_BIN:-target/release}/comet" 2>>"$OUT/comet.log" &
      SERVER_PID=$!; URL=ws://127.0.0.1:$PORT_COMET/websocket ;;
    peer)
      PORT=$PORT_PEER BCRYPT_COST=${BCRYPT_COST:-10} HEARTBEAT_MS=${HEARTBEAT_MS:-15000} \
        PRESENCE_GRACE_MS=${PRESENCE_GRACE_MS:-3000} taskset -c 0 node bench/peer/server.js 2>>"$OUT/peer.log" &
      SERVER_PID=$!; URL=ws://127.0.0.1:$PORT_PEER/websocket ;;
  esac
  for _ in $(seq 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/"${URL##*:}") 2>/dev/null; then break; fi
    URLPORT=${URL#ws://127.0.0.1:}; URLPORT=${URLPORT%%/*}
    (exec 3<>/dev/tcp/127.0.0.1/"$URLPORT") 2>/dev/null && break
    sleep 0.1
  done
  sleep 1
}

stop_server() {
  kill "$SERVER_PID" ${CLUSTER_PIDS:-} 2>/dev/null || true
  wait "$SERVER_PID" ${CLUSTER_PIDS:-} 2>/dev/null || true
  CLUSTER_PIDS=
  if [ -n "${DATA_DIR:-}" ]; then rm -rf "$DATA_DIR"; DATA_DIR=; fi
}

# S12: a NATS server and three comet instances on one embedded store (ports 3901-3903),
# all on core 0 as one comet is for S9; the load generator on core 1. URL is the first
# instance (where the senders are); SPREAD the other two; PIDS every process measured.
PORT_NATS=4322
start_cluster() {
  DATA_DIR=$(mktemp -d)
  local pids=() port broker=
  CLUSTER_PIDS=
  # BROKER=0: the same three instances without NATS (stored changes still cross; typing
  # and the shared limits do not), for CPU with and without the broker.
  if [ "${BROKER:-1}" != 0 ]; then
    taskset -c 0 nats-server -a 127.0.0.1 -p $PORT_NATS >/dev/null 2>&1 &
    CLUSTER_PIDS="$!"
    broker=TRANSPORTER=nats://127.0.0.1:$PORT_NATS
  fi
  for i in 1 2 3; do
    port=$((PORT_COMET + i - 1))
    env $(comet_env $port) $broker \
      taskset -c 0 "${COMET_BIN:-target/release}/comet" 2>>"$OUT/comet-$i.log" &
    pids+=("$!")
    # One at a time: the first creates the administrator and the default channel.
    for _ in $(seq 100); do
      (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
      sleep 0.1
    done
  done
  SERVER_PID=${pids[0]}
  CLUSTER_PIDS="$CLUSTER_PIDS ${pids[1]} ${pids[2]}"
  PIDS="${pids[0]},${pids[1]},${pids[2]}"
  URL=ws://127.0.0.1:$PORT_COMET/websocket
  SPREAD="ws://127.0.0.1:$((PORT_COMET + 1))/websocket,ws://127.0.0.1:$((PORT_COMET + 2))/websocket"
  sleep 1
}

run_cluster() { # label args...
  local label=$1; shift
  for r in $(seq "$RUNS"); do
    start_cluster
    taskset -c 1 target/release/comet-bench "$@" --url "$URL" --spread "$SPREAD" --pid "$SERVER_PID" \
      --pids "$PIDS" --metrics-ports "$PORT_COMET,$((PORT_COMET + 1)),$((PORT_COMET + 2))" \
      ${TYPING:+--typing} --label "cluster${BROKER:+-broker$BROKER}/$label" | tee -a "$OUT/results.jsonl"
    stop_server
  done
}

run() { # server label args...
  local server=$1 label=$2; shift 2
  for r in $(seq "$RUNS"); do
    start_server "$server"
    taskset -c 1 target/release/comet-bench "$@" --url "$URL" --pid "$SERVER_PID" --label "$server/$label" \
      | tee -a "$OUT/results.jsonl"
    stop_server
  done
}

for scenario in $SCENARIOS; do
  case $scenario in
    idle)
      for n in 1000 5000 10000; do
        for server in comet peer; do
          run $server "S1 idle $n" idle --clients $n --sub bench.empty --hold-secs 10
        done
      done
      for server in comet peer; do
        run $server "S1 idle 1000 50 docs" idle --clients 1000 --sub bench.docs --hold-secs 10
      done ;;
    echo)
      # S2: clients x calls in flight, each call one round trip of `echo`.
      for cw in ${ECHO_SHAPES:-"1x1" "10x10" "100x1" "100x10"}; do
        clients=${cw%x*}; inflight=${cw#*x}
        for server in ${SERVERS:-comet peer}; do
          run $server "S2 echo ${clients}x${inflight}" echo --clients "$clients" --inflight "$inflight" --secs 10 --warmup-secs 3
        done
      done ;;
    initial)
      # 5,000 documents of 10 KB (~50 MB of added frames) to 1 and to 100 clients at once.
      for n in ${INITIAL_CLIENTS:-1 100}; do
        for server in comet peer; do
          run $server "S8 initial 50 MB to $n" initial --clients "$n" --docs 5000 --doc-bytes 10240
        done
      done ;;
    mergebox)
      for rate in ${MERGEBOX_RATES:-100 1000}; do
        for server in comet peer; do
          run $server "S4 mergebox 1000 x 5 sets, ${rate} updates/s" mergebox --clients 1000 --rate "$rate" --secs 10 --warmup-secs 3
        done
      done ;;
    changes)
      # 10k events/s (100 batches of 100); 0 or 1000 watching clients, none, 1% or all matching.
      for clients in 0 1000; do
        for every in 0 100 1; do
          for server in comet peer; do
            run $server "S7 changes ${clients} clients, match 1/${every}" changes --clients "$clients" --rate 100 --match-every "$every" --secs 10 --warmup-secs 3
          done
        done
      done ;;
    fanout)
      for clients in ${FANOUT_CLIENTS:-1000}; do
        for rate in ${FANOUT_RATES:-20 50 100 200}; do
          for server in comet peer; do
            run $server "S3 fanout ${clients} x ${rate}/s" fanout --clients "$clients" --rate "$rate" --secs 10 --warmup-secs 3
          done
        done
      done ;;
    login)
      # Each connection creates its own user, then logs in back to back.
      for mode in resume password; do
        for c in 1 10; do
          for server in comet peer; do
            run $server "Login ${mode} x${c}" login --clients "$c" --mode "$mode" --secs 10 --warmup-secs 3
          done
        done
      done ;;
    loginping)
      # 10 sessions ping every 20 ms: 10 s quiet, then 10 s beside 100 back-to-back password logins.
      for server in comet peer; do
        run $server "Login: ping beside 100 password logins" login-ping --clients 100 --observers 10 --secs 10 --warmup-secs 8
      done ;;
    chat)
      # S9: users made with bcrypt cost 4 (set-up only). One room of 1,000 members with the
      # administrator sending 100/s (the latency target's case), one of 5,000 at 20/s, then
      # 1,000 rooms of 10 with 2,000 messages/s across them.
      # Heartbeats off on both servers: the load generator leaves thousands of sockets
      # unread while it makes users and rooms, and would miss the pings.
      export BCRYPT_COST=4 HEARTBEAT_MS=0
      # CHAT_MODES picks among them: "big huge small" (the default) runs all three.
      modes=" ${CHAT_MODES:-big huge small} "
      for server in ${SERVERS:-comet peer}; do
        if [[ $modes == *" big "* ]]; then
          run $server "S9 chat: one room of 1000, ${BIG_RATE:-100} msgs/s" chat --mode big --big 1000 --rate "${BIG_RATE:-100}" --secs 8 --warmup-secs 3
        fi
        if [[ $modes == *" huge "* ]]; then
          run $server "S9 chat: one room of ${CHAT_BIG:-5000}, ${CHAT_BIG_RATE:-20} msgs/s" chat --mode big --big "${CHAT_BIG:-5000}" --rate "${CHAT_BIG_RATE:-20}" --secs 8 --warmup-secs 3
        fi
        if [[ $modes == *" small "* ]]; then
          run $server "S9 chat: ${CHAT_ROOMS:-1000} rooms of 10, ${CHAT_RATE:-2000} msgs/s" chat --mode small --rooms "${CHAT_ROOMS:-1000}" --room-size 10 --rate "${CHAT_RATE:-2000}" --secs 8 --warmup-secs 3
        fi
      done ;;
    cluster)
      # S12: S9's rooms with their members spread over three instances (member i on
      # instance i mod 3), every sender on the first; compare with S9 on one instance.
      export BCRYPT_COST=4 HEARTBEAT_MS=0
      modes=" ${CHAT_MODES:-big small} "
      if [[ $modes == *" big "* ]]; then
        run_cluster "S12 chat: one room of 1000 over 3 instances, ${BIG_RATE:-100} msgs/s" chat --mode big --big 1000 --rate "${BIG_RATE:-100}" --secs 8 --warmup-secs 3
      fi
      if [[ $modes == *" small "* ]]; then
        run_cluster "S12 chat: ${CHAT_ROOMS:-1000} rooms of 10 over 3 instances, ${CHAT_RATE:-500} msgs/s" chat --mode small --rooms "${CHAT_ROOMS:-1000}" --room-size 10 --rate "${CHAT_RATE:-500}" --secs 8 --warmup-secs 3
      fi ;;
    presence)
      # S10: 10,000 users log in over 10 s, each watched by 100 of 1,000 watching
      # connections (1,000 users each); then every tenth user disconnects at once. Users
      # made with bcrypt cost 4 (set-up only); heartbeats off as for S9.
      export BCRYPT_COST=4 HEARTBEAT_MS=0
      for server in ${SERVERS:-comet peer}; do
        run $server "S10 presence: ${PRESENCE_USERS:-10000} users, 100 watchers each" presence \
          --users "${PRESENCE_USERS:-10000}" --watchers "${PRESENCE_WATCHERS:-1000}" \
          --watch "${PRESENCE_WATCH:-1000}" --storm-secs 10 --grace-ms "${PRESENCE_GRACE_MS:-3000}"
      done ;;
  esac
done

python3 bench/summarize.py "$OUT/results.jsonl" | tee "$OUT/summary.md"
