#!/usr/bin/env bash
# Instructions per webhook, gatehouse ingress against the minimal relay, counted by callgrind:
# repeatable on a noisy machine where CPU time is not (BENCHMARKS.md, "Counted, not timed").
#
#   bench/callgrind/ingest.sh [REQUESTS]        # default 2000, after 200 not counted
#   CALLGRIND_KEEP=DIR bench/callgrind/ingest.sh  # also keeps both profiles in DIR
#
# Needs valgrind, python3, the release binaries (cargo build --release -p gatehouse -p
# gatehouse-bench) and the machine's RabbitMQ on 127.0.0.1:5672 (guest/guest); declares a
# topology under its own prefix and deletes it (queues and exchanges) when it ends.
set -euo pipefail

requests=${1:-2000}
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
prefix="cg-$(date +%s)-$$"
amqp="amqp://guest:guest@127.0.0.1:5672/%2f"
export HUBSECRET=bench-hub-secret-0123456789abcdef
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for q in $(rabbitmqctl list_queues name --quiet 2>/dev/null | grep "^$prefix\." || true); do
        rabbitmqctl delete_queue "$q" --quiet >/dev/null 2>&1 || true
    done
    for x in $(rabbitmqctl list_exchanges name --quiet 2>/dev/null | grep "^$prefix\." || true); do
        rabbitmqctl eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$x\">>), false, <<\"callgrind\">>)." >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# Without DWARF, valgrind starts in seconds; the symbol table still names every function.
strip --strip-debug -o "$work/gatehouse" "$repo/target/release/gatehouse"
strip --strip-debug -o "$work/gatehouse-bench" "$repo/target/release/gatehouse-bench"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cat > "$work/drive.py" <<'EOF'
# Signed hub-signature deliveries over 8 keep-alive connections, every body its own.
import hashlib, hmac, http.client, json, os, sys, threading, time
port, n, first = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
secret = os.environ["HUBSECRET"].encode()
def body(i):
    v = {"webhookEvent": "user_deactivated", "timestamp": int(time.time() * 1000),
         "userAccountId": "5b10ac8d82e05b22cc7d4ef5", "accountType": "atlassian",
         "user": {"accountId": "5b10a2844c20165700ede%06d" % i, "accountType": "atlassian",
                  "displayName": "Bench User %d" % i, "email": None, "publicName": "bench.user.%d" % i,
                  "timeZone": "Europe/Berlin", "locale": "en_US"}, "padding": ""}
    v["padding"] = "x" * max(0, 2048 - len(json.dumps(v, separators=(",", ":"))))
    return json.dumps(v, separators=(",", ":")).encode()
bad = []
def work(t):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(first + t, first + n, 8):
        b = body(i)
        c.request("POST", "/webhooks/confluence/user_deactivated", b, {"content-type": "application/json",
                  "x-hub-signature": "sha256=" + hmac.new(secret, b, hashlib.sha256).hexdigest()})
        r = c.getresponse(); r.read()
        if r.status != 202: bad.append(r.status)
threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
if bad: sys.exit("not accepted: %d (%s)" % (len(bad), sorted(set(bad))))
EOF

# Runs "$@" under callgrind on $1's port, sends 200 uncounted then $requests counted webhooks,
# and prints the counted instructions: total and inside SHA-256's block function.
count() {
    local label=$1 port=$2; shift 2
    valgrind --tool=callgrind --callgrind-out-file="$work/$label.%p" "$@" >"$work/$label.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    for _ in $(seq 1 120); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
        sleep 1
    done
    python3 "$work/drive.py" "$port" 200 10000000
    callgrind_control -z "$pid" >/dev/null 2>&1
    python3 "$work/drive.py" "$port" "$requests" 0
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill -TERM "$pid"; wait "$pid" || true
    local dump
    dump=$(ls "$work/$label".*.1)
    # Kept for callgrind_annotate when asked: CALLGRIND_KEEP=/some/dir.
    if [[ -n ${CALLGRIND_KEEP:-} ]]; then cp "$dump" "$CALLGRIND_KEEP/$label.callgrind"; fi
    local total sha
    total=$(callgrind_annotate --inclusive=yes "$dump" | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
    sha=$(callgrind_annotate --inclusive=yes --threshold=100 "$dump" \
        | awk '/ring::digest::dynstate::sha256_block_data_order \[/ && !seen {gsub(",","",$1); print $1; seen=1}')
    echo "$total ${sha:-0}"
}

gh_port=$(port)
cat > "$work/gatehouse.toml" <<EOF
[server]
listen = "127.0.0.1:$gh_port"
[log]
# The default level, as deployed: its one span per delivery is part of what is counted.
level = "info"
[queue]
backend = "rabbitmq"
url = "$amqp"
prefix = "$prefix"
[store]
url = "sqlite://$work/gatehouse.db"
[audit.stream]
enabled = false
[[sources]]
name = "confluence"
scheme = "hub-signature"
secrets = [{ id = "bench", value = "env:HUBSECRET" }]
EOF
read -r gh_total gh_sha < <(count gatehouse "$gh_port" "$work/gatehouse" ingress --config "$work/gatehouse.toml")

relay_port=$(port)
read -r relay_total relay_sha < <(count relay "$relay_port" "$work/gatehouse-bench" relay \
    --listen "127.0.0.1:$relay_port" --amqp-url "$amqp" --exchange "$prefix.events" \
    --routing-key confluence.user.deactivated --secret "$HUBSECRET")

python3 - "$requests" "$gh_total" "$gh_sha" "$relay_total" "$relay_sha" <<'EOF'
import sys
n, gt, gs, rt, rs = (int(x) for x in sys.argv[1:])
print(f"instructions per webhook ({n} counted, 2 KiB bodies):")
print(f"  gatehouse ingress  {gt / n:>9,.0f}   without SHA-256 {(gt - gs) / n:>9,.0f}")
print(f"  minimal relay      {rt / n:>9,.0f}   without SHA-256 {(rt - rs) / n:>9,.0f}")
print(f"  gatehouse / relay  {gt / rt:>9.2f}×  without SHA-256 {(gt - gs) / (rt - rs):>8.2f}×")
print("(valgrind's CPU has no SHA extensions, so SHA-256 runs on its vector fallback here and")
print(" costs several times what it does on hardware: the second column leaves it out)")
EOF
