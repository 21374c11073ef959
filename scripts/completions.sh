#!/usr/bin/env bash
# Regenerates completions/ from the command tree (run by goreleaser's before hook).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p completions
for sh in bash zsh fish powershell; do
  go run . completion "$sh" > "completions/ots-ota.$sh"
done
