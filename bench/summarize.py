#!/usr/bin/env python3
"""Medians of benchmark runs, comet beside the Node peer, with their ratio."""
import json
import statistics
import sys
from collections import defaultdict

METRICS = {
    "idle": [("rss_per_session_bytes", "B RSS/session", False), ("handshakes_per_sec", "handshakes/s", True),
             ("server_cpu_pct_idle", "% CPU idle", False)],
    "fanout": [("deliveries_per_sec", "deliveries/s", True), ("p50_ms", "p50 ms", False), ("p99_ms", "p99 ms", False),
               ("server_cpu_us_per_delivery", "µs CPU/delivery", False), ("rss_kib", "RSS KiB at end", False)],
    "mergebox": [("bytes_per_session_doc", "B RSS per (session x doc)", False),
                 ("changed_per_sec", "changed frames/s", True), ("changed_per_update", "changed frames per update", False),
                 ("bytes_per_changed", "bytes per changed frame", False),
                 ("server_cpu_us_per_frame", "µs CPU/changed frame", False),
                 ("rss_end_kib", "RSS KiB after the updates", False)],
    "changes": [("events_per_sec", "events/s", True), ("server_cpu_us_per_event", "µs CPU/event", False),
                ("frames_delivered", "frames delivered", True)],
    "initial": [("secs_to_last_ready", "s until every client is ready", False),
                ("delivered_mb_per_sec", "MB/s delivered", True),
                ("rss_peak_over_before_mb", "MB peak RSS over the start", False),
                ("rss_peak_kib", "KiB peak RSS", False),
                ("server_cpu_secs", "s server CPU", False)],
    "login": [("logins_per_sec", "logins/s", True), ("p50_ms", "p50 ms", False), ("p99_ms", "p99 ms", False),
              ("server_cpu_us_per_login", "µs CPU/login", False), ("failed", "failed logins", False)],
    "login-ping": [("ping_p99_quiet_ms", "ping p99 ms, quiet", False),
                   ("ping_p99_loaded_ms", "ping p99 ms, beside logins", False),
                   ("ping_p99_rise_ms", "ping p99 rise ms", False),
                   ("ping_p50_loaded_ms", "ping p50 ms, beside logins", False),
                   ("logins_per_sec", "password logins/s meanwhile", True)],
    "chat": [("messages_per_sec", "messages/s", True), ("deliveries_per_sec", "deliveries/s", True),
             ("delivery_p50_ms", "delivery p50 ms", False), ("delivery_p99_ms", "delivery p99 ms", False),
             ("last_member_p99_ms", "last member p99 ms", False), ("rtt_p50_ms", "sendMessage p50 ms", False),
             ("rtt_p99_ms", "sendMessage p99 ms", False),
             ("server_cpu_us_per_message", "µs CPU/message", False),
             ("server_cpu_us_per_delivery", "µs CPU/delivery", False),
             ("rss_bytes_per_member", "B RSS/member", False)],
    "presence": [("online_all_seen_after_storm_ms", "all online seen, ms after storm", False),
                 ("deliveries_per_sec_connect", "deliveries/s (connect)", True),
                 ("server_cpu_us_per_status_change_connect", "µs CPU/status change (connect, incl. login)", False),
                 ("offline_all_seen_after_grace_ms", "all offline seen, ms after grace", False),
                 ("server_cpu_us_per_status_change_disconnect", "µs CPU/status change (disconnect)", False),
                 ("rss_bytes_per_watch_pair", "B RSS/watch pair", False)],
    "echo": [("calls_per_sec", "calls/s", True), ("p50_ms", "p50 ms", False), ("p99_ms", "p99 ms", False),
             ("server_cpu_us_per_call", "µs CPU/call", False)],
}

runs = defaultdict(list)
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    server, label = r["label"].split("/", 1)
    runs[(label, r["scenario"], server)].append(r)

labels = []
for (label, scenario, _server) in runs:
    if (label, scenario) not in labels:
        labels.append((label, scenario))

print("| scenario | metric | comet (median, spread) | peer (median, spread) | comet advantage |")
print("|---|---|---|---|---|")
for label, scenario in labels:
    for key, name, higher_better in METRICS[scenario]:
        cell = {}
        med = {}
        for server in ("comet", "peer"):
            all_runs = runs.get((label, scenario, server), [])
            values = [r[key] for r in all_runs if r.get(key) is not None]
            if all_runs and not values:
                # A measure the server never reached (e.g. watchers that never all caught up).
                cell[server] = f"never (n={len(all_runs)})"
            elif values:
                med[server] = statistics.median(values)
                cell[server] = f"{med[server]:.4g} ({min(values):.4g}–{max(values):.4g}, n={len(values)})"
            else:
                cell[server] = "–"
        ratio = "–"
        if "comet" in med and "peer" in med and med["comet"] and med["peer"]:
            x = med["comet"] / med["peer"] if higher_better else med["peer"] / med["comet"]
            ratio = f"{x:.2f}x"
        print(f"| {label} | {name} | {cell['comet']} | {cell['peer']} | {ratio} |")
