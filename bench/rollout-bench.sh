#!/usr/bin/env bash
# Rollout scale bench (issue 22, "Scale"): `ots-ota rollout` to simulated
# Tasmota devices that pull their image (sim --personality tasmota-mqtt),
# over mosquitto on loopback, in waves with --max-fetches N.
#
# Phases, each against a fresh mosquitto (no retained state carried over):
#   1. one device alone, as the bench's rollout runs it (its command →
#      verdict time is "one device's time", t1);
#   2. DEVICES devices, split over sim processes of at most PER_SIM each,
#      in the waves WAVES.
# Printed (and kept in $OUT): the rollout's wall, the waves' span, the
# model Σ over waves of ⌈wave size / N⌉ × t1 plus the pauses, every
# device's outcome, ots-ota's peak RSS and CPU, mosquitto's CPU and peak
# RSS, the sims' CPU, and the built-in file server's load (requests and
# bytes, as the devices' fetch events tell them).
#
#   bench/rollout-bench.sh                            # 1,000 devices, N=100
#   DEVICES=10000 MAX_FETCHES=1000 PER_SIM=5000 bench/rollout-bench.sh
#   WAVES=10%,50%,100% WAVE_PAUSE=0s IMAGE_SIZE=1M WRITE_RATE=100KiB/s BOOT_TIME=3s \
#     STABILITY=10s DISCOVER_WAIT=10s OUT=/tmp/rollout-bench bench/rollout-bench.sh
#
# Limits: the hard limit of open files here is 20,000 per process. The
# script raises the soft limit (ulimit -n) to it for mosquitto (one socket
# per device), the sims (a broker link per device and a download at times:
# 2 per device, so at most ~9,900 devices per sim process) and ots-ota (a
# socket per fetch in flight).
#
# Network safety: the script runs itself in a fresh network namespace
# (unshare -n: only lo) and refuses to run where any interface but lo
# exists. mosquitto, the file server and every device use 127.0.0.1.
# Every process it starts is bounded in time (sim --duration, timeout) and
# stopped by its PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-1000}
MAX_FETCHES=${MAX_FETCHES:-100}
WAVES=${WAVES:-10%,50%,100%}
WAVE_PAUSE=${WAVE_PAUSE:-0s}
PER_SIM=${PER_SIM:-5000}
IMAGE_SIZE=${IMAGE_SIZE:-1M}
WRITE_RATE=${WRITE_RATE:-100KiB/s}
BOOT_TIME=${BOOT_TIME:-3s}
STABILITY=${STABILITY:-10s}
DISCOVER_WAIT=${DISCOVER_WAIT:-10s}
BOUND=${BOUND:-3600} # seconds: every process started stops by then
PORT=1883

if [ -z "${ROLLOUT_BENCH_NETNS:-}" ]; then
  # Built before the namespace: a module download needs the network.
  OUT=${OUT:-$(mktemp -d /tmp/rollout-bench.XXXXXX)}
  mkdir -p "$OUT"
  go build -o "$OUT/ots-ota" .
  export OUT
  exec unshare -n env ROLLOUT_BENCH_NETNS=1 bash -c 'ip link set lo up && exec bash "$0" "$@"' "$0" "$@"
fi
if ip -o link show | awk -F': ' '{ print $2 }' | grep -qv '^lo$'; then
  echo "rollout-bench: refusing to run: this network namespace has interfaces besides lo" >&2
  exit 2
fi
export OTS_OTA_TEST_IFACES=lo XDG_CONFIG_HOME="$OUT/config" XDG_CACHE_HOME="$OUT/cache" OTS_OTA_STATE_DIR=
bin="$OUT/ots-ota"
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosquitto" ] || { echo "rollout-bench: mosquitto is required (apt-get install mosquitto)" >&2; exit 2; }
hard=$(ulimit -Hn)
ulimit -n "$hard"
need=$(( (DEVICES < PER_SIM ? DEVICES : PER_SIM) * 2 + 64 ))
if [ "$hard" != unlimited ] && [ "$need" -gt "$hard" ]; then
  echo "rollout-bench: a sim of $PER_SIM devices needs $need open files, the limit is $hard: lower PER_SIM" >&2
  exit 2
fi

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

tck=$(getconf CLK_TCK)
cpu() { awk -v t="$tck" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }   # user+system seconds
hwm() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }         # peak RSS, MiB
ms() { date +%s%3N; }

"$bin" sim image --chip esp32 --project tasmota32 --version 15.5.0 --size "$IMAGE_SIZE" -o "$OUT/tasmota32.bin" >/dev/null
size=$(stat -c %s "$OUT/tasmota32.bin")

# broker PHASE: a fresh mosquitto on 127.0.0.1:$PORT.
broker() {
  cat >"$OUT/mosquitto-$1.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
max_connections -1
persistence false
max_queued_messages 100000
log_dest stderr
log_type error
log_type warning
EOF
  timeout "$BOUND" "$mosquitto" -c "$OUT/mosquitto-$1.conf" 2>"$OUT/mosquitto-$1.log" &
  pids+=($!)
  mpid=
  for _ in $(seq 100); do
    # timeout's child, whose /proc is read for the CPU and memory.
    [ -n "$mpid" ] || mpid=$(pgrep -P "${pids[-1]}" || true)
    if [ -n "$mpid" ] && (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "rollout-bench: mosquitto did not start (see $OUT/mosquitto-$1.log)" >&2
  exit 1
}

# sims PHASE N: N devices over ⌈N / PER_SIM⌉ processes; waits until all are up.
sims() {
  local phase=$1 n=$2 k=0 left=$2
  spids=()
  while [ "$left" -gt 0 ]; do
    local m=$(( left < PER_SIM ? left : PER_SIM ))
    timeout "$BOUND" "$bin" --json sim --personality tasmota-mqtt --chip esp32 --broker "mqtt://127.0.0.1:$PORT" --count "$m" \
      --topic-prefix "b${phase}s$k" --seed "$((k + 1))" --write-rate "$WRITE_RATE" --boot-time "$BOOT_TIME" \
      --duration "${BOUND}s" >"$OUT/sim-$phase-$k.out" 2>"$OUT/sim-$phase-$k.err" &
    spids+=($!)
    pids+=($!)
    left=$(( left - m )); k=$(( k + 1 ))
  done
  for i in "${!spids[@]}"; do
    # Its events are held until every device is online: a first line means started.
    until [ -s "$OUT/sim-$phase-$i.out" ]; do
      kill -0 "${spids[$i]}" 2>/dev/null || { echo "rollout-bench: a sim ended early:" >&2; cat "$OUT/sim-$phase-$i.err" >&2; exit 1; }
      sleep 0.5
    done
  done
}

# rollout PHASE WAVES: runs the rollout over every device on the broker.
rollout() {
  local phase=$1
  local c0 t0 t1
  c0=$(cpu "$mpid")
  t0=$(ms)
  set +e
  timeout "$BOUND" /usr/bin/time -v -o "$OUT/time-$phase.txt" "$bin" -v rollout --json "$OUT/tasmota32.bin" \
    --family tasmota --expect-version 15.5.0 --broker "mqtt://127.0.0.1:$PORT" --serve-addr 127.0.0.1 \
    --state-dir "$OUT/state-$phase" --all --discover-wait "$DISCOVER_WAIT" --waves "$2" --wave-pause "$WAVE_PAUSE" \
    --max-fetches "$MAX_FETCHES" --stability-window "$STABILITY" >"$OUT/rollout-$phase.json" 2>"$OUT/rollout-$phase.err"
  code=$?
  set -e
  t1=$(ms)
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
  bcpu=$(awk -v a="$c0" -v b="$(cpu "$mpid")" 'BEGIN { printf "%.1f", b - a }')
  brss=$(hwm "$mpid")
  scpu=0
  for p in "${spids[@]}"; do
    c=$(pgrep -P "$p" || true) # timeout's child
    [ -n "$c" ] && scpu=$(awk -v a="$scpu" -v b="$(cpu "$c")" 'BEGIN { printf "%.1f", a + b }')
  done
}

# report PHASE: what the rollout and its file server did.
report() {
  local phase=$1 j="$OUT/rollout-$1.json" e="$OUT/rollout-$1.err"
  echo "== $phase: exit $code, wall $wall s (discovery included)"
  jq -r 'select(.type=="summary") | "   outcomes: \(.counts)"' "$j"
  jq -rs '[.[] | select(.type=="wave")] as $w
    | ($w | map(select(.state=="started")) | first | .time) as $a
    | ($w | map(select(.state!="started")) | last | .time) as $b
    | "   waves: \($w | map(select(.state=="started") | .devices | length) | map(tostring) | join(" + ")) devices; first start \($a), last end \($b)"' "$j"
  jq -rs '[.[] | select(.type=="wave")] | map(.time |= (sub("\\.[0-9]+";"") | sub("(?<z>[+-][0-9]{2}):?(?<m>[0-9]{2})$"; "\(.z)\(.m)") | strptime("%Y-%m-%dT%H:%M:%S%z") | mktime)) as $w
    | ($w | map(select(.state=="started")) | first | .time) as $a
    | ($w | map(select(.state!="started")) | last | .time) as $b
    | "   waves span: \($b - $a) s (to the second)"' "$j" 2>/dev/null || true
  jq -rs '[.[] | select(.type=="result") | .duration_ms] | sort
    | if length > 0 then "   device command → verdict: min \(.[0]/1000) s, median \(.[length/2|floor]/1000) s, max \(.[-1]/1000) s" else "   no results" end' "$j"
  awk '/Maximum resident set size/ { printf "   ots-ota peak RSS %.1f MiB", $NF / 1024 }
       /User time/ { u = $NF } /System time/ { s = $NF } END { printf ", CPU %.1f s\n", u + s }' "$OUT/time-$phase.txt"
  echo "   mosquitto: CPU $bcpu s during the rollout, peak RSS $brss MiB; sims: CPU $scpu s (their whole life)"
  # The file server's load, as the devices saw it (rollout does not log
  # its file server's requests): a download attempt is a request.
  cat "$OUT"/sim-"$phase"-*.out | jq -rs '
    [.[] | select(.type=="fetching")] as $f | [.[] | select(.type=="fetched")] as $d | [.[] | select(.type=="fetch_failed")] as $x
    | "   file server: \($f | length) requests (\($x | length) failed), \($d | map(.bytes) | add // 0) bytes written by the devices"
      + " (\((($d | map(.bytes) | add // 0) / 1048576 * 10 | floor) / 10) MiB)"'
}

echo "rollout-bench: $DEVICES devices, --max-fetches $MAX_FETCHES, --waves $WAVES, --wave-pause $WAVE_PAUSE;"
echo "  image $size bytes, flash $WRITE_RATE, boot $BOOT_TIME, --stability-window $STABILITY, --discover-wait $DISCOVER_WAIT; out $OUT"

# 1. One device alone.
broker one
sims one 1
rollout one 100%
report one
t1=$(jq -rs '[.[] | select(.type=="result") | .duration_ms] | first / 1000' "$OUT/rollout-one.json")
for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()

# 2. The fleet.
broker fleet
s0=$(ms)
sims fleet "$DEVICES"
echo "== fleet: $DEVICES devices online in $(awk -v a="$s0" -v b="$(ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }') s over ${#spids[@]} sim process(es)"
rollout fleet "$WAVES"
report fleet
jq -rs --argjson n "$MAX_FETCHES" --argjson t1 "$t1" --arg pause "$WAVE_PAUSE" '
  [.[] | select(.type=="wave" and .state=="started") | .devices | length] as $w
  | ($pause | if test("ms$") then (sub("ms$";"") | tonumber / 1000) elif test("m$") then (sub("m$";"") | tonumber * 60) else (sub("s$";"") | tonumber) end) as $p
  | ([$w[] | ((. + $n - 1) / $n | floor)] | add) as $batches
  | "== model: Σ ⌈wave / N⌉ = \($batches) batches × t1 \($t1) s + \(($w | length) - 1) pauses × \($p) s = \($batches * $t1 + (($w | length) - 1) * $p) s"' \
  "$OUT/rollout-fleet.json"
echo "   (the rollout wall above includes --discover-wait and the start; a slot is given back at the device's boot, before its stability window)"
