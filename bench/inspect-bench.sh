#!/usr/bin/env bash
# Benchmark for `ots-ota inspect` (issue 16, "inspect at the speed of
# hashing"), against ots-ota's own floors rather than another program:
#
#   wall(inspect) ≤ wall(version) + 1.3 × Go SHA-256 of the file + 1 ms
#   peak RSS(inspect) ≤ peak RSS(version) + 12 MiB
#
# Walls are medians of N whole-process runs (default 21); the SHA-256 time
# is the median of N in-process hashes of the file already in memory.
#
#   bench/inspect-bench.sh [N] [SIZE]     default: 21 4M
#
# Linux only (peak RSS from getrusage). Sends nothing on any network, but
# run it inside `unshare -n` like everything else here.
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-21}
size=${2:-4M}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

go build -o "$work/ots-ota" .
go build -o "$work/inspectbench" ./bench/inspectbench
bin="$work/ots-ota"
"$bin" sim image --chip esp32s3 --size "$size" -o "$work/fw.bin" >/dev/null 2>&1
"$bin" inspect "$work/fw.bin" >/dev/null # warm the page cache

read -r ver_ms ver_kb < <("$work/inspectbench" -n "$n" -- "$bin" version)
read -r ins_ms ins_kb < <("$work/inspectbench" -n "$n" -- "$bin" inspect "$work/fw.bin")
sha_ms=$("$work/inspectbench" -n "$n" -sha "$work/fw.bin")

awk -v n="$n" -v size="$size" -v bytes="$(wc -c <"$work/fw.bin")" \
  -v vm="$ver_ms" -v vk="$ver_kb" -v im="$ins_ms" -v ik="$ins_kb" -v sm="$sha_ms" 'BEGIN {
  wt = vm + 1.3 * sm + 1
  mt = vk / 1024 + 12
  printf "image: %s (%d bytes), medians of %d runs\n", size, bytes, n
  printf "  ots-ota version       %7.2f ms  %6.1f MiB peak RSS\n", vm, vk / 1024
  printf "  Go SHA-256 of file    %7.2f ms\n", sm
  printf "  ots-ota inspect       %7.2f ms  %6.1f MiB peak RSS\n", im, ik / 1024
  printf "  wall target  ≤ %.2f ms (version + 1.3 × SHA-256 + 1 ms): %s\n", wt, (im <= wt ? "met" : "MISSED")
  printf "  memory target ≤ %.1f MiB (version + 12 MiB): %s\n", mt, (ik / 1024 <= mt ? "met" : "MISSED")
}'
