#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each; FUZZ_SECONDS
# changes it), starting from the seed corpus in fuzz/corpus. Optional: not
# part of the test suite. Installs cargo-fuzz when it is missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
# The stable toolchain builds libFuzzer's instrumentation with this switch.
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  echo "== $target (${seconds}s)"
  mkdir -p "corpus/$target"
  # New inputs go to a scratch folder so the committed seeds stay small.
  scratch="$(mktemp -d)"
  cargo fuzz run --sanitizer none "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048
  rm -rf "$scratch"
done
