#!/usr/bin/env bash
# Fleet benchmark for `ots-ota push` (issue 9, Measure (a)), printing ratios
# from one run.
#
# Simulated ESP32-S3 devices (erase 512 KiB/s, flash writes 100-400 KiB/s:
# four sim processes at 100, 200, 300 and 400 KiB/s), a 1.5 MB image,
# --parallel N. The simulators run in their own processes, so the figures
# for ots-ota (peak RSS, CPU seconds) are its own.
#
#   bench/push-bench.sh [N...]        default: 100 250
#   CURL_SAMPLE=5 bench/push-bench.sh # devices the sequential curl loop measures
#
# Printed per fleet size N:
#   fleet wall ÷ one device's wall   (target ≤ 1.2; the one device is the
#                                     slowest kind, 100 KiB/s, pushed alone)
#   sequential curl loop ÷ ots-ota   (curl measured on CURL_SAMPLE devices of
#                                     each speed and extrapolated to N)
#   ots-ota peak RSS (target ≤ 80 MB) and CPU seconds
#
# Network safety: every device listens on 127.0.x.y, mDNS is off. Nothing
# leaves loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100 250)
CURL_SAMPLE=${CURL_SAMPLE:-2}
VALID_AFTER=${VALID_AFTER:-2s}
BOOT_TIME=${BOOT_TIME:-1s}
rates=(100 200 300 400)

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/ots-ota" .
bin="$work/ots-ota"
"$bin" sim image --chip esp32s3 --project ots-fw-main --version 2.0.0 --size 1500000 -o "$work/fw.bin" 2>/dev/null

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# start_sims N SUBNET: N devices split over the four write rates, on
# 127.0.SUBNET+k.x (one /24 per rate); prints the targets.
start_sims() {
  local n=$1 subnet=$2 per=$(( ($1 + 3) / 4 )) left=$1 k=0
  : >"$work/targets"
  for r in "${rates[@]}"; do
    local m=$(( left < per ? left : per ))
    [ "$m" -gt 0 ] || break
    local base="127.0.$((subnet + k)).2"
    "$bin" sim -n "$m" --personality seed --extensions --no-mdns --web-port -1 \
      --base-ip "$base" --erase-rate 512KiB/s --write-rate "${r}KiB/s" \
      --valid-after "$VALID_AFTER" --boot-time "$BOOT_TIME" >"$work/sim-$subnet-$k.log" 2>&1 &
    pids+=($!)
    for ((i = 0; i < m; i++)); do echo "127.0.$((subnet + k)).$((2 + i)) $r" >>"$work/targets"; done
    left=$((left - m)); k=$((k + 1))
  done
  # Wait until every device answers.
  while read -r ip _; do
    for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "http://$ip:3232/ota/status" && break; sleep 0.1; done
  done <"$work/targets"
}

stop_sims() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

# push_timed LOG TARGET...: runs ots-ota push under /usr/bin/time; prints wall seconds.
push_timed() {
  local log=$1; shift
  local t0 t1
  t0=$(now)
  /usr/bin/time -f "%M %U %S" -o "$log.time" "$bin" push --parallel 0 --stability-window "$VALID_AFTER" \
    --verify-timeout 120s --json "$work/fw.bin" "$@" >"$log" 2>"$log.err" || true
  t1=$(now)
  secs "$t0" "$t1"
}

summary_counts() { tail -n 1 "$1" | sed -n 's/.*"counts":\({[^}]*}\).*/\1/p'; }

printf '%-6s %-10s %-10s %-8s %-16s %-10s %-9s %-8s %s\n' devices ots-ota one-dev ratio "curl loop (est)" curl/ots "RSS MB" CPU-s outcomes
subnet=100
for n in "${sizes[@]}"; do
  # One device alone, the slowest kind.
  start_sims 1 $subnet
  one=$(push_timed "$work/one.json" "$(head -n1 "$work/targets" | cut -d' ' -f1)")
  stop_sims
  subnet=$((subnet + 4))

  start_sims "$n" $subnet
  mapfile -t ips < <(cut -d' ' -f1 "$work/targets")
  wall=$(push_timed "$work/fleet.json" "${ips[@]}")
  read -r rss_kb utime stime <"$work/fleet.json.time"
  counts=$(summary_counts "$work/fleet.json")
  stop_sims
  subnet=$((subnet + 4))

  # The sequential curl loop, measured on a sample of each speed against
  # fresh devices, then scaled to the fleet's mix.
  start_sims $((CURL_SAMPLE * 4)) $subnet
  total=0
  for r in "${rates[@]}"; do
    mapfile -t sample < <(awk -v r="$r" '$2 == r { print $1 }' "$work/targets" | head -n "$CURL_SAMPLE")
    t0=$(now)
    for ip in "${sample[@]}"; do
      curl -s -o /dev/null --max-time 300 --data-binary @"$work/fw.bin" -H 'Content-Type: application/octet-stream' "http://$ip:3232/update" || true
    done
    t1=$(now)
    per=$(awk -v a="$t0" -v b="$t1" -v k="${#sample[@]}" 'BEGIN { printf "%.3f", (b - a) / k }')
    count=$(( (n + 3) / 4 ))
    total=$(awk -v t="$total" -v p="$per" -v c="$count" 'BEGIN { printf "%.1f", t + p * c }')
  done
  stop_sims
  subnet=$((subnet + 4))

  printf '%-6s %-10s %-10s %-8s %-16s %-10s %-9s %-8s %s\n' "$n" "${wall}s" "${one}s" "$(ratio "$wall" "$one")" \
    "${total}s" "$(ratio "$total" "$wall")" "$(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }')" \
    "$(awk -v u="$utime" -v s="$stime" 'BEGIN { printf "%.2f", u + s }')" "$counts"
done
echo "(ots-ota walls include the reboot and the ${VALID_AFTER} stability window; curl's do not, and curl sees only the HTTP 200)"
