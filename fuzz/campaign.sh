#!/usr/bin/env bash
# The coverage-guided campaign: every target (or those named) for SECONDS each under libFuzzer,
# one at a time, then a table of what ran. Needs cargo-fuzz and a nightly toolchain (README.md).
#
#   fuzz/campaign.sh 60                 # every target, 60 s each
#   fuzz/campaign.sh 30 qsh normalize   # two targets
#
# Work corpora grow in fuzz/corpus-work/<target>/ (not committed), seeded from fuzz/corpus/;
# crashes land in fuzz/artifacts/<target>/crash-*, executions over 100 ms in .../slow-*; logs in
# fuzz/corpus-work/<target>.log. Each input that was slow during the run is run again alone,
# three times: "hangs" counts those still over 100 ms (the input's own cost), "slow seen" every
# execution over 100 ms during the run (including stalls of a busy machine).
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-60}
shift || true
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}/libfuzzer
cargo +nightly fuzz build -O -a -s none --target-dir "$TARGET_DIR" gatehouse
BIN=$TARGET_DIR/x86_64-unknown-linux-gnu/release/gatehouse
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    mapfile -t TARGETS < <(ls corpus)
fi
printf '| target | executions | seconds | panics | slow seen | hangs > 100 ms | committed corpus | corpus after |\n|---|---:|---:|---:|---:|---:|---:|---:|\n'
total=0
for target in "${TARGETS[@]}"; do
    mkdir -p "corpus-work/$target" "artifacts/$target"
    log="corpus-work/$target.log"
    start=$(date +%s)
    marker=$(mktemp)
    status=0
    GATEHOUSE_FUZZ_TARGET=$target "$BIN" "corpus-work/$target" "corpus/$target" \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 -max_len=8192 -timeout=5 \
        -rss_limit_mb=2048 -dict=gatehouse.dict -artifact_prefix="artifacts/$target/" >"$log" 2>&1 || status=$?
    took=$(( $(date +%s) - start ))
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    slow=$(grep -c '^SLOW_EXECUTION' "$log" || true)
    panics=$([ "$status" -eq 0 ] && echo 0 || echo "1 (exit $status)")
    hangs=0
    mapfile -t slow_inputs < <(find "artifacts/$target" -name 'slow-*' -newer "$marker")
    rm -f "$marker"
    for input in "${slow_inputs[@]}"; do
        still=$(for _ in 1 2 3; do GATEHOUSE_FUZZ_TARGET=$target "$BIN" "$input" 2>&1; done | grep -c '^SLOW_EXECUTION' || true)
        [ "$still" -eq 3 ] && hangs=$(( hangs + 1 ))
    done
    total=$(( total + runs ))
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$target" "$runs" "$took" "$panics" "$slow" "$hangs" \
        "$(ls "corpus/$target" | wc -l)" "$(ls "corpus-work/$target" | wc -l)"
done
printf '\ntotal executions: %s\n' "$total"
