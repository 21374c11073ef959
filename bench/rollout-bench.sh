#!/usr/bin/env bash
# Rollout scale bench (issue 22, "Scale"): `ots-ota rollout` to simulated
# devices that pull their image, over mosquitto on loopback, in waves with
# --max-fetches N: Tasmota (sim --personality tasmota-mqtt) and, with
# ESPHOME > 0, ESPHome nodes that poll a manifest (sim --personality
# esphome-pull). A rollout is one family: a mixed fleet gets two rollouts
# at once, one per family, each with its own file server and N.
#
# Phases, each against a fresh mosquitto (no retained state carried over):
#   1. one device alone per family, as the bench's rollout runs it (its
#      command → verdict time is "one device's time", t1);
#   2. the fleet: DEVICES devices (ESPHOME of them ESPHome nodes), over
#      sim processes of at most PER_SIM devices each, in the waves WAVES.
# Printed per rollout (and kept in $OUT): the rollout's wall, the waves'
# span, the model Σ over waves of ⌈wave size / N⌉ × t1 plus the pauses,
# the outcomes, ots-ota's peak RSS and CPU, mosquitto's CPU and peak RSS,
# the sims' CPU, and the file servers' load (image requests and bytes, as
# the devices' events tell them).
#
#   bench/rollout-bench.sh                            # 1,000 Tasmota devices, N=100
#   DEVICES=10000 ESPHOME=5000 MAX_FETCHES=1000 PER_SIM=5000 bench/rollout-bench.sh
#   WAVES=10%,50%,100% WAVE_PAUSE=0s IMAGE_SIZE=1M WRITE_RATE=100KiB/s BOOT_TIME=3s \
#     STABILITY=10s DISCOVER_WAIT=10s UPDATE_INTERVAL=5s OUT=/tmp/rollout-bench bench/rollout-bench.sh
#
# Limits: the hard limit of open files here is 20,000 per process. The
# script raises the soft limit (ulimit -n) to it for mosquitto (one socket
# per device), the sims (a broker link per device and a download at times:
# 2 per device, so at most ~9,900 devices per sim process) and ots-ota (a
# socket per fetch in flight, and per manifest poll).
#
# Network safety: the script runs itself in a fresh network namespace
# (unshare -n: only lo) and refuses to run where any interface but lo
# exists. mosquitto, the file servers and every device use 127.0.0.1.
# Every process it starts is bounded in time (sim --duration, timeout) and
# stopped by its PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-1000}
ESPHOME=${ESPHOME:-0}
MAX_FETCHES=${MAX_FETCHES:-100}
WAVES=${WAVES:-10%,50%,100%}
WAVE_PAUSE=${WAVE_PAUSE:-0s}
PER_SIM=${PER_SIM:-5000}
IMAGE_SIZE=${IMAGE_SIZE:-1M}
WRITE_RATE=${WRITE_RATE:-100KiB/s}
BOOT_TIME=${BOOT_TIME:-3s}
STABILITY=${STABILITY:-10s}
DISCOVER_WAIT=${DISCOVER_WAIT:-10s}
UPDATE_INTERVAL=${UPDATE_INTERVAL:-5s}
BOUND=${BOUND:-3600} # seconds: every process started stops by then
PORT=1883          # mosquitto
EPORT=8070         # the ESPHome rollout's file server (its URL is built into the nodes)
TASMOTA=$((DEVICES - ESPHOME))

if [ -z "${ROLLOUT_BENCH_NETNS:-}" ]; then
  # What the bench runs, checked before anything starts.
  command -v jq >/dev/null || { echo "rollout-bench: jq is required (apt-get install jq)" >&2; exit 2; }
  [ -x /usr/bin/time ] || { echo "rollout-bench: /usr/bin/time is required (apt-get install time)" >&2; exit 2; }
  { command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; } ||
    { echo "rollout-bench: mosquitto is required (apt-get install mosquitto)" >&2; exit 2; }
  OUT=${OUT:-$(mktemp -d /tmp/rollout-bench.XXXXXX)}
  mkdir -p "$OUT"
  # From the module cache only: the build contacts no proxy, checksum
  # database or toolchain server.
  GOPROXY=off GOSUMDB=off go build -o "$OUT/ots-ota" . ||
    { echo "rollout-bench: go build failed with GOPROXY=off: a module is missing from the cache (go mod download, then run again)" >&2; exit 2; }
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
[ "$TASMOTA" -ge 0 ] || { echo "rollout-bench: ESPHOME ($ESPHOME) is more than DEVICES ($DEVICES)" >&2; exit 2; }
hard=$(ulimit -Hn)
ulimit -n "$hard"
need=$(( (DEVICES < PER_SIM ? DEVICES : PER_SIM) * 2 + 64 ))
if [ "$hard" != unlimited ] && [ "$need" -gt "$hard" ]; then
  echo "rollout-bench: a sim of $PER_SIM devices needs $need open files, the limit is $hard: lower PER_SIM" >&2
  exit 2
fi

pids=()
stop_all() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT

tck=$(getconf CLK_TCK)
cpu() { awk -v t="$tck" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }   # user+system seconds
hwm() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }         # peak RSS, MiB
ms() { date +%s%3N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }

"$bin" sim image --chip esp32 --project tasmota32 --version 15.5.0 --size "$IMAGE_SIZE" -o "$OUT/tasmota32.bin" >/dev/null
"$bin" sim image --chip esp32 --project node --version 1.1.0 --size "$IMAGE_SIZE" -o "$OUT/node.bin" >/dev/null
size=$(stat -c %s "$OUT/tasmota32.bin")

# broker PHASE: a fresh mosquitto on 127.0.0.1:$PORT; sets mpid.
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

# sims PHASE FAMILY N: N devices over ⌈N / PER_SIM⌉ processes, started
# one after another (each returns once its devices are online); their
# timeout PIDs are added to spids.
sims() {
  local phase=$1 family=$2 left=$3 k=0
  while [ "$left" -gt 0 ]; do
    local m=$(( left < PER_SIM ? left : PER_SIM )) log="$OUT/sim-$phase-$family-$k"
    local args=(--chip esp32 --broker "mqtt://127.0.0.1:$PORT" --count "$m" --seed "$((k + 1))"
      --write-rate "$WRITE_RATE" --boot-time "$BOOT_TIME" --duration "${BOUND}s")
    if [ "$family" = tasmota ]; then
      args+=(--personality tasmota-mqtt --topic-prefix "t${k}")
    else
      args+=(--personality esphome-pull --node-name "e${k}-%05d" --version 1.0.0
        --manifest-url "http://127.0.0.1:$EPORT/manifest.json" --update-interval "$UPDATE_INTERVAL")
    fi
    timeout "$BOUND" "$bin" --json sim "${args[@]}" >"$log.out" 2>"$log.err" &
    spids+=($!)
    pids+=($!)
    # Its events are held until every device is online: a first line means started.
    until [ -s "$log.out" ]; do
      kill -0 "${spids[-1]}" 2>/dev/null || { echo "rollout-bench: a sim ended early:" >&2; cat "$log.err" >&2; exit 1; }
      sleep 0.5
    done
    left=$(( left - m )); k=$(( k + 1 ))
  done
}

# rollout PHASE FAMILY WAVES: runs the rollout over every device of the
# family on the broker, in the background; its PID is in rpid.
rollout() {
  local phase=$1 family=$2 args
  if [ "$family" = tasmota ]; then
    args=("$OUT/tasmota32.bin" --family tasmota --expect-version 15.5.0 --serve-addr 127.0.0.1)
  else
    args=("$OUT/node.bin" --family esphome --expect-version 1.1.0 --serve-addr "127.0.0.1:$EPORT" --check-wait 10m)
  fi
  (
    t0=$(ms)
    set +e
    timeout "$BOUND" /usr/bin/time -v -o "$OUT/time-$phase-$family.txt" "$bin" -v rollout --json "${args[@]}" \
      --broker "mqtt://127.0.0.1:$PORT" --state-dir "$OUT/state-$phase-$family" --all --discover-wait "$DISCOVER_WAIT" \
      --waves "$3" --wave-pause "$WAVE_PAUSE" --max-fetches "$MAX_FETCHES" --stability-window "$STABILITY" \
      >"$OUT/rollout-$phase-$family.json" 2>"$OUT/rollout-$phase-$family.err"
    echo "$? $(secs "$t0" "$(ms)")" >"$OUT/exit-$phase-$family"
  ) &
  rpid=$!
}

# report PHASE FAMILY: what one rollout and its devices did.
report() {
  local phase=$1 family=$2 j="$OUT/rollout-$1-$2.json"
  read -r code wall <"$OUT/exit-$phase-$family"
  echo "== $phase $family: exit $code, wall $wall s (discovery included)"
  jq -r 'select(.type=="summary") | "   outcomes: \(.counts)"' "$j"
  jq -rs '[.[] | select(.type=="wave")] | map(.time |= (sub("\\.[0-9]+";"") | sub("Z$";"+0000") | strptime("%Y-%m-%dT%H:%M:%S%z") | mktime)) as $w
    | ($w | map(select(.state=="started")) | first | .time) as $a
    | ($w | map(select(.state!="started")) | last | .time) as $b
    | "   waves: \($w | map(select(.state=="started") | .devices | length) | map(tostring) | join(" + ")) devices, span \($b - $a) s (first start → last end, to the second)"' "$j"
  jq -rs '[.[] | select(.type=="result") | .duration_ms] | sort
    | if length > 0 then "   device command → verdict: min \(.[0]/1000) s, median \(.[length/2|floor]/1000) s, max \(.[-1]/1000) s" else "   no results" end' "$j"
  awk '/Maximum resident set size/ { printf "   ots-ota peak RSS %.1f MiB", $NF / 1024 }
       /User time/ { u = $NF } /System time/ { s = $NF } END { printf ", CPU %.1f s\n", u + s }' "$OUT/time-$phase-$family.txt"
  # The file server's load, as the devices saw it (rollout does not log
  # its file server's requests): a download attempt is an image request.
  # ESPHome nodes also poll the manifest every UPDATE_INTERVAL (the sims
  # tell a check only when its outcome changes: those polls are not
  # counted).
  cat "$OUT"/sim-"$phase"-"$family"-*.out | awk '
    /"type":"fetching"/ { n++ } /"type":"fetch_failed"/ { bad++ }
    /"type":"fetched"/ { if (match($0, /"bytes":[0-9]+/)) b += substr($0, RSTART + 8, RLENGTH - 8) }
    END { printf "   file server: %d image requests (%d failed), %.0f bytes (%.1f MiB) written by the devices\n", n, bad, b, b / 1048576 }'
}

# model PHASE FAMILY T1: Σ ⌈wave / N⌉ × t1 + the pauses.
model() {
  jq -rs --argjson n "$MAX_FETCHES" --argjson t1 "$3" --arg pause "$WAVE_PAUSE" '
    [.[] | select(.type=="wave" and .state=="started") | .devices | length] as $w
    | ($pause | if test("ms$") then (sub("ms$";"") | tonumber / 1000) elif test("m$") then (sub("m$";"") | tonumber * 60) else (sub("s$";"") | tonumber) end) as $p
    | ([$w[] | ((. + $n - 1) / $n | floor)] | add) as $batches
    | "   model: Σ ⌈wave / N⌉ = \($batches) batches × t1 \($t1) s + \(($w | length) - 1) pauses × \($p) s = \(($batches * $t1 + (($w | length) - 1) * $p) * 10 | round / 10) s"' \
    "$OUT/rollout-$1-$2.json"
}

families=()
[ "$TASMOTA" -gt 0 ] && families+=(tasmota)
[ "$ESPHOME" -gt 0 ] && families+=(esphome)
echo "rollout-bench: $DEVICES devices ($TASMOTA Tasmota, $ESPHOME ESPHome), --max-fetches $MAX_FETCHES per rollout, --waves $WAVES, --wave-pause $WAVE_PAUSE;"
echo "  image $size bytes, flash $WRITE_RATE, boot $BOOT_TIME, --stability-window $STABILITY, --discover-wait $DISCOVER_WAIT,"
echo "  ESPHome update_interval $UPDATE_INTERVAL; out $OUT"

# 1. One device alone, per family.
declare -A t1
for f in "${families[@]}"; do
  broker "one-$f"
  spids=()
  sims one "$f" 1
  rollout one "$f" 100%
  wait "$rpid"
  report one "$f"
  t1[$f]=$(jq -rs '[.[] | select(.type=="result") | .duration_ms] | first / 1000' "$OUT/rollout-one-$f.json")
  stop_all
done

# 2. The fleet: every family's sims, then every family's rollout at once.
broker fleet
spids=()
s0=$(ms)
for f in "${families[@]}"; do
  n=$TASMOTA
  [ "$f" = esphome ] && n=$ESPHOME
  sims fleet "$f" "$n"
done
echo "== fleet: $DEVICES devices online in $(secs "$s0" "$(ms)") s over ${#spids[@]} sim process(es)"
c0=$(cpu "$mpid")
declare -A rpids
for f in "${families[@]}"; do
  rollout fleet "$f" "$WAVES"
  rpids[$f]=$rpid
done
for f in "${families[@]}"; do wait "${rpids[$f]}"; done
bcpu=$(awk -v a="$c0" -v b="$(cpu "$mpid")" 'BEGIN { printf "%.1f", b - a }')
scpu=0
for p in "${spids[@]}"; do
  c=$(pgrep -P "$p" || true) # timeout's child
  [ -n "$c" ] && scpu=$(awk -v a="$scpu" -v b="$(cpu "$c")" 'BEGIN { printf "%.1f", a + b }')
done
for f in "${families[@]}"; do
  report fleet "$f"
  model fleet "$f" "${t1[$f]}"
done
echo "== mosquitto: CPU $bcpu s during the rollouts, peak RSS $(hwm "$mpid") MiB; sims: CPU $scpu s in all (their whole life)"
echo "   (a rollout's wall includes --discover-wait and its start; a slot is given back at the device's boot, before its stability window)"
