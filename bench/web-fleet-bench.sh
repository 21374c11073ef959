#!/usr/bin/env bash
# Benchmark for `ots-ota push` to WLED and Tasmota (issue 19, "Prove it"),
# against what their users run today, replayed with curl:
#
#   Tasmota: TasmoAdmin's fleet update, every device in parallel (its
#     browser JS runs them with Promise.all). Per device: Status 0; OtaUrl
#     <url>; Upgrade 1 (two /cm requests, as TasmoAdmin sends them); sleep
#     10 s; then Status 0 every 10 s, at most 15 times, until the numeric
#     part of StatusFWR.Version is the target. The image comes from
#     `python3 -m http.server` bound to 127.0.0.1. Every curl request sends
#     `Referer: http://<device>/`: TasmoAdmin sends none, but Tasmota's
#     Referer gate answers nothing without it (uploaders.md §6). A poll
#     that fails (the device is rebooting) waits for the next one;
#     TasmoAdmin's per-request retries are not replayed.
#     Against: push --protocol tasmota --via-url, and push by file.
#   WLED: a sequential loop, one device after the other:
#     curl -F skipValidation= -F update=@fw.bin http://DEV/update, then
#     GET /json/info every 1 s until "ver" is the target (what a user
#     watching the page does), so both sides end at "runs the new version".
#     Against: push --protocol wled.
#
# ots-ota runs with --parallel 0 and --expect-version (these images carry
# no identity the devices tell), twice per configuration: as shipped
# (after the new version shows, it watches the 30 s stability window,
# since neither family tells an app state) and with --no-wait-valid (it
# stops when the new version runs, where the curl sides stop).
#
# Every run gets fresh simulated devices (sim personality tasmota or wled,
# ESP32-S3, the sims' default timing: slot erase 512 KiB/s, flash writes
# 100 KiB/s, 3 s boots; arduino-esp32's 1.25 MiB app slot), a 1.2 MiB
# image, and its own 127.0.K.0/24. Walls are medians of RUNS runs.
#
#   bench/web-fleet-bench.sh [tasmota|wled|all]    default: all
#   RUNS=3 SIZES="1 20" SEQ_RUNS=1 IMAGE_SIZE=1.2M WRITE_RATE= bench/web-fleet-bench.sh
#     SEQ_RUNS: runs of the sequential WLED loop over more than one
#     device (20 devices take about 20 × 20 s); WRITE_RATE: the sims'
#     flash write speed (default theirs, 100KiB/s)
#
# Measured numbers, the machine and how to read them: bench/README.md.
#
# Network safety: the script runs itself in a fresh network namespace
# (unshare -n: only lo, with the multicast route on lo) and refuses to run
# where any interface but lo exists. Devices and the file servers bind
# 127.0.0.0/8, sims advertise nothing (--no-mdns), OTS_OTA_TEST_IFACES=lo.
set -euo pipefail

if [ -z "${WEB_FLEET_BENCH_NETNS:-}" ]; then
  exec unshare -n env WEB_FLEET_BENCH_NETNS=1 bash -c \
    'ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo && exec bash "$0" "$@"' \
    "$0" "$@"
fi
if ip -o link show | awk -F': ' '{ print $2 }' | grep -qv '^lo$'; then
  echo "web-fleet-bench: refusing to run: this network namespace has interfaces besides lo" >&2
  exit 2
fi
export OTS_OTA_TEST_IFACES=lo

cd "$(dirname "$0")/.."
family=${1:-all}
RUNS=${RUNS:-3}
SEQ_RUNS=${SEQ_RUNS:-1}
read -r -a sizes <<<"${SIZES:-1 20}"
IMAGE_SIZE=${IMAGE_SIZE:-1.2M}
TAS_FROM=15.4.0 TAS_TO=15.5.0
WLED_FROM=16.0.1 WLED_TO=16.0.2
WLED_RELEASE=ESP32-S3_8MB_opi

work=$(mktemp -d)
pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

GOPROXY=off GOSUMDB=off go build -o "$work/ots-ota" .
bin="$work/ots-ota"
mkdir -p "$work/www"
"$bin" sim image --project tasmota --version "$TAS_TO" --size "$IMAGE_SIZE" -o "$work/www/tasmota32.bin" >/dev/null 2>&1
"$bin" sim image --wled-release "$WLED_RELEASE" --version "$WLED_TO" --size "$IMAGE_SIZE" -o "$work/wled.bin" >/dev/null 2>&1

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

subnet=10
# start_sims PERSONALITY N: N fresh devices on 127.0.$subnet.2…; their
# addresses go to $work/ips.
start_sims() {
  local pers=$1 n=$2 i ip extra=()
  subnet=$((subnet + 1))
  # WLED 16's subnet gate: the host (127.0.0.1) is on the devices' network.
  if [ "$pers" = wled ]; then extra=(--subnet 127.0.0.0/8); fi
  if [ -n "${WRITE_RATE:-}" ]; then extra+=(--write-rate "$WRITE_RATE"); fi
  "$bin" sim --personality "$pers" -n "$n" --no-mdns --base-ip "127.0.$subnet.2" "${extra[@]}" \
    >"$work/sim-$subnet.log" 2>&1 &
  pids+=($!)
  : >"$work/ips"
  for ((i = 0; i < n; i++)); do echo "127.0.$subnet.$((2 + i))" >>"$work/ips"; done
  while read -r ip; do
    for _ in $(seq 100); do
      if [ "$pers" = tasmota ]; then
        curl -s -o /dev/null --max-time 1 -H "Referer: http://$ip/" "http://$ip/cm?cmnd=Status%202" && break
      else
        curl -s -o /dev/null --max-time 1 "http://$ip/json/info" && break
      fi
      sleep 0.1
    done
  done <"$work/ips"
}

# push_run LOG ARGS...: ots-ota push, all devices at once; prints the wall
# time and the outcome counts.
push_run() {
  local log=$1; shift
  local t0 t1
  mapfile -t ips <"$work/ips"
  t0=$(now)
  "$bin" push --parallel 0 --json "$@" "${ips[@]}" >"$log" 2>"$log.err" || true
  t1=$(now)
  echo "$(secs "$t0" "$t1") $(tail -n 1 "$log" | sed -n 's/.*"counts":{\([^}]*\)}.*/\1/p' | tr -d '"')"
}

# ta_device IP URL: TasmoAdmin's sequence for one device; prints
# "IP updated" or "IP gave-up".
ta_device() {
  local ip=$1 url=$2 v i
  cm() { curl -s --connect-timeout 5 --max-time 5 -H "Referer: http://$ip/" -G "http://$ip/cm" --data-urlencode "cmnd=$1"; }
  cm "Status 0" >/dev/null || { echo "$ip gave-up"; return; }
  cm "OtaUrl $url" >/dev/null || true
  cm "Upgrade 1" >/dev/null || true
  sleep 10
  for ((i = 1; i <= 15; i++)); do
    v=$(cm "Status 0" | sed -n 's/.*"Version":"\([0-9][0-9.]*\).*/\1/p') || true
    if [ "$v" = "$TAS_TO" ]; then echo "$ip updated"; return; fi
    [ "$i" -lt 15 ] && sleep 10
  done
  echo "$ip gave-up"
}

tasmoadmin_run() {
  local port=$((18000 + subnet)) t0 t1 ip
  python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$port" >"$work/www-$subnet.log" 2>&1 &
  local srv=$!
  for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" && break; sleep 0.1; done
  : >"$work/ta.out"
  local devs=()
  t0=$(now)
  while read -r ip; do
    ta_device "$ip" "http://127.0.0.1:$port/tasmota32.bin" >>"$work/ta.out" &
    devs+=($!)
  done <"$work/ips"
  wait "${devs[@]}" || true
  t1=$(now)
  kill "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true
  echo "$(secs "$t0" "$t1") updated:$(grep -c ' updated$' "$work/ta.out" || true),gave-up:$(grep -c ' gave-up$' "$work/ta.out" || true)"
}

wled_loop_run() {
  local t0 t1 ip ok=0 bad=0 v
  t0=$(now)
  while read -r ip; do
    curl -s -o /dev/null --max-time 300 -F skipValidation= -F "update=@$work/wled.bin" "http://$ip/update" || true
    v=
    for _ in $(seq 120); do
      v=$(curl -s --max-time 2 "http://$ip/json/info" | sed -n 's/.*"ver":"\([^"]*\)".*/\1/p') || true
      [ "$v" = "$WLED_TO" ] && break
      sleep 1
    done
    if [ "$v" = "$WLED_TO" ]; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
  done <"$work/ips"
  t1=$(now)
  echo "$(secs "$t0" "$t1") updated:$ok,gave-up:$bad"
}

# measure NAME PERSONALITY N RUNS CMD...: RUNS runs on fresh devices;
# records "NAME N median walls… | outcomes".
measure() {
  local name=$1 pers=$2 n=$3 runs=$4; shift 4
  local walls="" outs="" r w o
  for ((r = 0; r < runs; r++)); do
    start_sims "$pers" "$n"
    read -r w o < <("$@")
    stop_all
    walls+="$w "; outs+="${o:-none} "
  done
  # all: every run ended with every device updated (no other outcome).
  local all
  all=$(echo "$outs" | tr ' ,' '\n\n' | awk -F: 'NF == 0 { next } NF != 2 || ($1 != "updated" && $2 != 0) { bad = 1 } END { print bad ? "no" : "yes" }')
  echo "${name%%:*}|$n|$name|$(echo "$walls" | median)|$all" >>"$work/rows"
  printf '%-40s %3s  %7ss   %-26s %s\n' "$name" "$n" "$(echo "$walls" | median)" "$walls" "$(echo "$outs" | tr ' ' '\n' | sed '/^$/d' | sort | uniq -c | awk '{ printf "%s×{%s} ", $1, $2 }')" | tee -a "$work/results"
}

exp_tas=(--protocol tasmota --expect-version "$TAS_TO")
exp_wled=(--protocol wled --expect-version "$WLED_TO")
echo "image $IMAGE_SIZE; sims: ESP32-S3, erase 512KiB/s, write ${WRITE_RATE:-100KiB/s}, boot 3s; medians of $RUNS runs"
printf '%-40s %3s  %8s   %-26s %s\n' side devices median "walls (s)" "outcomes (runs×{counts})"
for n in "${sizes[@]}"; do
  if [ "$family" = all ] || [ "$family" = tasmota ]; then
    measure "tasmota: TasmoAdmin (curl)" tasmota "$n" "$RUNS" tasmoadmin_run
    measure "tasmota: push --via-url" tasmota "$n" "$RUNS" push_run "$work/p.json" "${exp_tas[@]}" --via-url "$work/www/tasmota32.bin"
    measure "tasmota: push --via-url --no-wait-valid" tasmota "$n" "$RUNS" push_run "$work/p.json" "${exp_tas[@]}" --via-url --no-wait-valid "$work/www/tasmota32.bin"
    measure "tasmota: push (file)" tasmota "$n" "$RUNS" push_run "$work/p.json" "${exp_tas[@]}" "$work/www/tasmota32.bin"
    measure "tasmota: push (file) --no-wait-valid" tasmota "$n" "$RUNS" push_run "$work/p.json" "${exp_tas[@]}" --no-wait-valid "$work/www/tasmota32.bin"
  fi
  if [ "$family" = all ] || [ "$family" = wled ]; then
    seq_runs=$RUNS
    [ "$n" -gt 1 ] && seq_runs=$SEQ_RUNS
    measure "wled: sequential curl -F loop" wled "$n" "$seq_runs" wled_loop_run
    measure "wled: push" wled "$n" "$RUNS" push_run "$work/p.json" "${exp_wled[@]}" "$work/wled.bin"
    measure "wled: push --no-wait-valid" wled "$n" "$RUNS" push_run "$work/p.json" "${exp_wled[@]}" --no-wait-valid "$work/wled.bin"
  fi
done

# Ratios: the curl side's median ÷ each ots-ota median, per size.
echo
echo "ratios (curl side's median ÷ ots-ota's; above 1: ots-ota is faster):"
awk -F'|' '
  { key = $1 "|" $2; if ($3 ~ /curl/) { base[key] = $4; ball[key] = $5 } else { k[++m] = key; side[m] = $3; wall[m] = $4; all[m] = $5 } }
  END { for (i = 1; i <= m; i++) if (base[k[i]] != "" && wall[i] > 0) {
          split(k[i], kk, "|")
          if (all[i] != "yes" || ball[k[i]] != "yes") printf "  %-40s %3s device(s):   n/a (not every device updated in every run)\n", side[i], kk[2]
          else printf "  %-40s %3s device(s): %5.2f\n", side[i], kk[2], base[k[i]] / wall[i] } }
' "$work/rows"
