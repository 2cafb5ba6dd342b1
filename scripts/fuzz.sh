#!/usr/bin/env bash
# In-process fuzzing of the decoders that read untrusted bytes (cargo-fuzz / libFuzzer,
# nightly; not run by CI). See docs/fuzzing.md.
#
#   scripts/fuzz.sh                    # every target, ${RUNS:-1000000} executions each
#   RUNS=100000 scripts/fuzz.sh tensor_proto control_message
#
# Each target starts from its committed seeds (fuzz/seeds/TARGET), copied into the
# git-ignored working corpus fuzz/corpus/TARGET, which keeps what libFuzzer adds between
# runs. Crashes land in fuzz/artifacts/TARGET, logs in fuzz/logs/TARGET.log. Prints a
# table (target, executions, coverage, findings) and exits non-zero if any target found
# a crash (or failed to run).
set -uo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-1000000}
ALL=(shm_request_frame shm_response_frame control_message tensor_proto
     rest_predict rest_examples text_config tfrecord_warmup rest_route write_decimal v2_infer)
TARGETS=("${@:-${ALL[@]}}")
# tfgate-proto's build script (the root .cargo/config.toml sets the same).
export TFGATE_PROTO_DESCRIPTORS="$PWD/proto/descriptors.binpb"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz || exit 1
fi

echo "building ${TARGETS[*]}" >&2
for t in "${TARGETS[@]}"; do
    nice -n 19 cargo +nightly fuzz build "$t" || exit 1
done

mkdir -p fuzz/logs
status=0
rows=()
for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    cp -n "fuzz/seeds/$t"/* "fuzz/corpus/$t/" 2>/dev/null || true
    log="fuzz/logs/$t.log"
    echo "fuzzing $t for $RUNS runs (log: $log)" >&2
    start=$(date +%s)
    nice -n 19 cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
        -runs="$RUNS" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    secs=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    findings=$(find "fuzz/artifacts/$t" -type f | wc -l)
    if [ "$rc" -ne 0 ] || [ "$findings" -ne 0 ]; then
        status=1
        tail -n 30 "$log" >&2
    fi
    rows+=("$(printf '| %-18s | %10s | %8s | %8s | %6s | %3s |' \
        "$t" "${execs:-?}" "${cov:-?}" "$findings" "$secs" "$rc")")
done

echo
echo "| target             | executions | coverage | findings | secs   | rc  |"
echo "|--------------------|-----------:|---------:|---------:|-------:|----:|"
printf '%s\n' "${rows[@]}"
exit $status
