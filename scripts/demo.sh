#!/usr/bin/env bash
# The main job against simulated devices, end to end, on loopback only:
# build ots-ota, make firmware images, inspect them, start a simulated fleet,
# update every device, watch one bad image roll back. Until `ots-ota push`
# lands, curl plays the uploader (exactly as the seed firmware's docs do).
#
# As root it re-runs itself in a fresh network namespace (only `lo`, with
# multicast for mDNS), so no packet can reach any other host.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && [ -z "${OTS_OTA_DEMO_NETNS:-}" ] && command -v unshare >/dev/null; then
  go build -o "${TMPDIR:-/tmp}/ots-ota-demo" .   # modules download outside the namespace
  exec env OTS_OTA_DEMO_NETNS=1 OTS_OTA_DEMO_BIN="${TMPDIR:-/tmp}/ots-ota-demo" unshare -n bash -c '
    ip link set lo up; ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo
    exec "$0"' "$0"
fi

work=$(mktemp -d)
sim_pid=
cleanup() { [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

ots=${OTS_OTA_DEMO_BIN:-}
if [ -z "$ots" ]; then ots="$work/ots-ota"; go build -o "$ots" .; fi
# Bold headings on a terminal only, and never with NO_COLOR (no-color.org:
# any non-empty value) or TERM=dumb.
bold= plain=
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ] && [ "${TERM:-dumb}" != dumb ]; then bold=$'\033[1m' plain=$'\033[0m'; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
run() { printf '$ %s\n' "$*"; "$@"; }
devices=4
token=demo-token

step "Make firmware images (what 'pio run' would produce)"
run "$ots" sim image --chip esp32s3 --project ots-fw-main --version 1.0.1 --size 1.2M -o "$work/fw-1.0.1.bin"
run "$ots" sim image --chip esp32s3 --project ots-fw-main --version 1.0.2 --size 1.2M -o "$work/fw-1.0.2.bin"
run "$ots" sim image --chip esp32c3 --project ots-fw-main --version 1.0.1 -o "$work/wrong-chip.bin"

step "Inspect them before a byte leaves the machine"
run "$ots" inspect --chip esp32s3 --max-size 2M "$work/fw-1.0.1.bin"
run "$ots" inspect --chip esp32s3 --max-size 2M "$work/wrong-chip.bin" || echo "(refused, exit $?)"

step "Start $devices simulated seed-firmware devices (Bearer auth, rollback; 1.0.2 crashes on boot)"
printf '$ OTS_OTA_PASSWORD=*** %s sim --devices %d --personality seed --extensions ... --json &\n' "$ots" "$devices"
OTS_OTA_PASSWORD=$token "$ots" sim --devices "$devices" --personality seed --extensions \
  --erase-rate 8MiB/s --write-rate 4MiB/s --boot-time 500ms --valid-after 2s \
  --behave 1.0.2=crash-on-boot --json >"$work/events.ndjson" 2>"$work/sim.log" &
sim_pid=$!
for _ in $(seq 100); do
  [ "$(grep -c '"event":"ready"' "$work/events.ndjson" 2>/dev/null || true)" -ge "$devices" ] && break
  sleep 0.1
done
addrs=$(grep '"event":"ready"' "$work/events.ndjson" | sed -E 's/.*"addr":"([^"]+)".*/\1/' | sort -u)
echo "$addrs" | sed 's/^/  device at /'

# mDNS only where it cannot leave the machine: the private namespace above.
mdns=${OTS_OTA_DEMO_NETNS:-}
if [ -n "$mdns" ]; then
  step "Find them by mDNS (on lo only: --interface), with what their TXT records tell"
  run "$ots" discover --interface lo --timeout 2s
fi

status() { curl -sS --max-time 2 "http://$1/ota/status" 2>/dev/null || echo '{"unreachable":true}'; }
wait_version() { # addr version state
  for _ in $(seq 100); do
    status "$1" | grep -q "\"version\":\"$2\".*\"state\":\"$3\"" && return 0
    sleep 0.1
  done
  return 1
}

step "A wrong token is refused by the device"
run curl -sS -o /dev/null -w 'HTTP %{http_code}\n' -H "Authorization: Bearer wrong" \
  --data-binary @"$work/fw-1.0.1.bin" "http://$(echo "$addrs" | head -1)/update" || true

step "Update every device to 1.0.1, in parallel"
pids=()
for a in $addrs; do
  curl -sS --max-time 60 -H "Authorization: Bearer $token" -H 'Content-Type: application/octet-stream' \
    --data-binary @"$work/fw-1.0.1.bin" "http://$a/update" >"$work/reply-$a" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}" || true
for a in $addrs; do echo "  $a answered: $(cat "$work/reply-$a")"; done

step "Verify: each device came back on 1.0.1 and marked it valid"
for a in $addrs; do
  if wait_version "$a" 1.0.1 valid; then echo "  $a updated: $(status "$a")"; else echo "  $a NOT verified: $(status "$a")"; fi
done

first=$(echo "$addrs" | head -1)
step "Send 1.0.2, which crashes on boot, to $first: the device answers 200 ..."
run curl -sS --max-time 60 -H "Authorization: Bearer $token" --data-binary @"$work/fw-1.0.2.bin" "http://$first/update"; echo
step "... but comes back on 1.0.1: rolled back (a 200 is not proof of an update)"
name=$(grep '"event":"ready"' "$work/events.ndjson" | grep "\"addr\":\"$first\"" | head -1 | sed -E 's/.*"device":"([^"]+)".*/\1/')
for _ in $(seq 150); do grep -q "\"event\":\"rollback\",.*\"device\":\"$name\"" "$work/events.ndjson" && break; sleep 0.1; done
wait_version "$first" 1.0.1 valid && echo "  $first: $(status "$first")"
grep "\"device\":\"$name\"" "$work/events.ndjson" | grep -E '"event":"(upload_finished|reboot|rollback)"' | tail -4 | sed 's/^/  event: /'
if [ -n "$mdns" ]; then
  step "What $first runs, and where each fact came from"
  run "$ots" info --interface lo "$first"
fi

step "Done: the event log of the simulator has $(wc -l <"$work/events.ndjson") events"
