#!/usr/bin/env bash
# Release dry run: checks .goreleaser.yaml, builds every archive into dist/
# (linux, darwin, windows x amd64, arm64) with checksums.txt, then checks
# that each archive holds the binary, README.md, LICENSE and the completions
# and prints the binary sizes. Nothing is published.
#   install goreleaser: go install github.com/goreleaser/goreleaser/v2@v2.15.1
set -euo pipefail
cd "$(dirname "$0")/.."
gr=${GORELEASER:-goreleaser}
command -v "$gr" >/dev/null || gr="$(go env GOPATH)/bin/goreleaser"
[ -x "$gr" ] || command -v "$gr" >/dev/null || {
  echo "goreleaser not found; install it: go install github.com/goreleaser/goreleaser/v2@v2.15.1" >&2; exit 1; }

"$gr" check
"$gr" release --snapshot --clean

fail=0
n=0
for a in dist/ots-ota_*.tar.gz dist/ots-ota_*.zip; do
  [ -e "$a" ] || continue
  n=$((n + 1))
  case "$a" in
    *.zip) list=$(unzip -Z1 "$a"); bin=ots-ota.exe ;;
    *) list=$(tar -tzf "$a"); bin=ots-ota ;;
  esac
  for f in "$bin" README.md LICENSE completions/ots-ota.bash completions/ots-ota.zsh completions/ots-ota.fish completions/ots-ota.powershell; do
    grep -qx "$f" <<<"$list" || { echo "$a: missing $f" >&2; fail=1; }
  done
done
[ "$n" = 6 ] || { echo "want 6 archives, found $n" >&2; fail=1; }
grep -c . dist/checksums.txt | grep -qx 6 || { echo "checksums.txt does not list 6 archives" >&2; fail=1; }

echo "--- binary sizes"
for b in dist/ots-ota_*/ots-ota dist/ots-ota_*/ots-ota.exe; do
  [ -e "$b" ] && printf '%-48s %8.1f MiB\n' "$b" "$(echo "$(stat -c %s "$b" 2>/dev/null || stat -f %z "$b") / 1048576" | bc -l)"
done
host=$(go env GOOS)_$(go env GOARCH)
for b in dist/ots-ota_"${host}"*/ots-ota; do
  [ -x "$b" ] || continue
  echo "--- $b version"; "$b" version
  # Without a git remote goreleaser's snapshot fills in "none" for the commit.
  "$b" version | grep -q '^commit: none' && echo "(no git remote here: a tagged release from a clone with one stamps the commit)"
done
[ "$fail" = 0 ] && echo "--- release check ok"
exit "$fail"
