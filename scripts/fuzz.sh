#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for SECONDS each (default 60) and reports how many
# inputs each executed. Usage, from anywhere in the repository:
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Each target starts from a scratch corpus, fuzz/corpus/<target> (git-ignored), seeded with a
# copy of the checked-in fuzz/seeds/<target>, so new inputs never land in fuzz/seeds. Inputs
# found by earlier runs stay in the scratch corpus and are reused.
#
# Exit status: 0 when every target ran its time without a crash, or when cargo-fuzz is not
# installed (the run is skipped with a note); 1 when a target crashed (the input is under
# fuzz/artifacts/<target>/) or did not build; 2 on a usage error.
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 unlocks them on stable.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [SECONDS] [TARGET...]   (SECONDS a positive integer, got '$seconds')" >&2
  exit 2
fi
shift || true

cd "$(dirname "$0")/.."
fuzz_dir=fuzz
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is not installed; skipping the fuzz run."
  echo "fuzz.sh: install it with: cargo install cargo-fuzz --locked"
  exit 0
fi

if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir "$fuzz_dir")
fi
if [[ ${#targets[@]} -eq 0 ]]; then
  echo "fuzz.sh: no fuzz targets found in $fuzz_dir/" >&2
  exit 1
fi

echo "fuzz.sh: building ${targets[*]} ($(cargo fuzz --version))"
for target in "${targets[@]}"; do
  if ! cargo fuzz build --fuzz-dir "$fuzz_dir" "$target"; then
    echo "fuzz.sh: $target did not build" >&2
    exit 1
  fi
done

failed=0
summary=()
for target in "${targets[@]}"; do
  corpus="$fuzz_dir/corpus/$target"
  artifacts="$fuzz_dir/artifacts/$target"
  log="$fuzz_dir/artifacts/$target.log"
  mkdir -p "$corpus" "$artifacts"
  if [[ -d "$fuzz_dir/seeds/$target" ]]; then
    cp -R "$fuzz_dir/seeds/$target/." "$corpus/"
  fi

  echo "fuzz.sh: $target for ${seconds}s (corpus $corpus, log $log)"
  status=0
  cargo fuzz run --fuzz-dir "$fuzz_dir" "$target" "$corpus" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?

  # libFuzzer's final statistics; the "#N DONE" progress line when they are missing.
  execs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)"
  if [[ -z "$execs" ]]; then
    execs="$(sed -n 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' "$log" | tail -n 1)"
  fi
  execs="${execs:-?}"

  if [[ $status -eq 0 ]]; then
    summary+=("$(printf '%-12s %12s execs   ok' "$target" "$execs")")
  else
    failed=1
    crash="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
    summary+=("$(printf '%-12s %12s execs   FAILED (exit %d) %s' "$target" "$execs" "$status" "${crash:-see $log}")")
    echo "fuzz.sh: $target failed; the end of its log:" >&2
    tail -n 40 "$log" >&2
  fi
done

echo
echo "fuzz.sh: ${seconds}s per target"
printf '  %s\n' "${summary[@]}"
exit "$failed"
