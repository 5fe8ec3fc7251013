#!/usr/bin/env bash
# Run every fuzz target for SECONDS seconds each (default 600), one after the
# other, at low CPU priority, growing the corpus under fuzz/corpus/<target>.
# Prints, per target, the executions run, the corpus size and the crashes
# found (crash inputs land in fuzz/artifacts/<target>/). Needs the nightly
# toolchain (`rustup toolchain install nightly`); installs cargo-fuzz if missing.
#
#   scripts/fuzz.sh                 # all targets, 10 minutes each
#   SECONDS_PER_TARGET=60 scripts/fuzz.sh merge token
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${SECONDS_PER_TARGET:-600}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(client_frame frame_decoder inflate stream_entry merge token)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
nice -n 19 cargo +nightly fuzz build --release
status=0
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  log="$(mktemp)"
  if nice -n 19 cargo +nightly fuzz run --release "$target" "corpus/$target" -- \
      -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=CRASH
    status=1
  fi
  runs="$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo '?')"
  crashes="$(find "artifacts/$target" -type f | wc -l)"
  echo "$target: $result, ${seconds}s, $runs executions, corpus $(find "corpus/$target" -type f | wc -l) inputs, $crashes crash files"
  if [ "$result" != ok ]; then tail -40 "$log"; fi
  rm -f "$log"
done
exit "$status"
