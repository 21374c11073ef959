#!/usr/bin/env bash
# ESPHome native OTA benchmark (issue 20): `ots-ota push` against a
# sequential loop of a stop-and-wait client (one 8 KiB block per 0x47, as
# ESPHome's espota2.py, one device after the other, as `esphome upload`
# and the dashboard's "update all"), on 1 and 20 simulated ESP32 ESPHome
# devices with the sim's latency:5ms fault and ESP32-like flash speed
# (erase 512 KiB/s, write 200 KiB/s). Prints both wall times and their
# ratio (baseline ÷ ots-ota), measured in one run.
#
#   bench/esphome-bench.sh                       # 1 and 20 devices, 1 MB image
#   bench/esphome-bench.sh -devices 1,5,20 -size 512K -latency 20ms -write-rate 400KiB/s
#
# Network safety: every device listens on 127.22.x.y, mDNS is off. Run it
# inside `unshare -n` (see the README's network-safety note).
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/ots-ota" .
go build -o "$work/esphomebench" ./bench/esphomebench
"$work/esphomebench" -ots "$work/ots-ota" "$@"
