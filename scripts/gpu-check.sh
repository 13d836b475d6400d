#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: build recursa with CUDA, check every reference
# fixture on CUDA (f32), run the backend snapshot/agreement tests on CUDA, and
# benchmark TRM-ARC and DIS-compact in f32 and bf16. Unattended, under 10 minutes
# on one H200 (most of it the release build); everything lands in OUT.
#
#   scripts/gpu-check.sh [OUT]        (default OUT: gpu-check-<date>)
#
# Needs: the CUDA driver and NVRTC (libnvrtc) on the library path, cargo.
# Dry run without a GPU (cpu everywhere, small f32 benchmarks):
#   RECURSA_DEVICE=cpu RECURSA_BENCH_BATCH=4 RECURSA_DTYPES=f32 scripts/gpu-check.sh
set -uo pipefail

OUT=${1:-gpu-check-$(date +%Y%m%d-%H%M)}
DEVICE=${RECURSA_DEVICE:-cuda}
BATCH=${RECURSA_BENCH_BATCH:-768}
DTYPES=${RECURSA_DTYPES:-f32 bf16}
# The paper's batch of 768 at 916 positions does not fit one GPU at once: the
# benchmark cuts it into the fewest micro-batches that fit the free memory.
MICRO=${RECURSA_MICRO_BATCHES:-auto}
mkdir -p "$OUT"
LOG="$OUT/summary.txt"
status=0
step() { echo "== $*" | tee -a "$LOG"; }
record() { # NAME RC
    if [ "$2" -eq 0 ]; then echo "   ok: $1" | tee -a "$LOG"; else echo "   FAILED ($2): $1" | tee -a "$LOG"; status=1; fi
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "device: $DEVICE"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
} | tee "$LOG"

FEATURES=""
[ "$DEVICE" = cpu ] || FEATURES="--features cuda"

step "build (release${FEATURES:+, $FEATURES})"
start=$(date +%s)
cargo build --release -p recursa $FEATURES >"$OUT/build.log" 2>&1
record "cargo build --release -p recursa $FEATURES ($(( $(date +%s) - start )) s)" $?
BIN=target/release/recursa

step "backends"
$BIN backends >"$OUT/backends.txt" 2>&1
record "recursa backends" $?

step "reference fixtures on $DEVICE (f32)"
$BIN verify-reference tests/fixtures/*.safetensors --backend "$DEVICE" >"$OUT/verify-reference.jsonl" 2>"$OUT/verify-reference.log"
record "recursa verify-reference tests/fixtures/*.safetensors --backend $DEVICE" $?
grep -h '"verdict"' "$OUT/verify-reference.jsonl" | tee -a "$LOG"

step "backend snapshot and agreement tests"
# A new backend's snapshot is written next to the test (INSTA_UPDATE=always) and
# copied out, to be reviewed and checked in; the agreement tests are the check.
INSTA_UPDATE=always RECURSA_TEST_CUDA="$DEVICE" cargo test --release -p recursa-tests $FEATURES --test backends \
    >"$OUT/backend-tests.log" 2>&1
record "cargo test --release -p recursa-tests $FEATURES --test backends" $?
cp tests/tests/snapshots/backends__forward_*.snap "$OUT/" 2>/dev/null

step "throughput"
for config in trm-arc1 dis-compact; do
    for dtype in $DTYPES; do
        $BIN bench --config "experiments/configs/$config.toml" --backend "$DEVICE" --dtype "$dtype" \
            --steps 5 --batch "$BATCH" --micro-batches "$MICRO" >"$OUT/bench-$config-$dtype.txt" 2>&1
        rc=$?
        record "recursa bench --config experiments/configs/$config.toml --backend $DEVICE --dtype $dtype --batch $BATCH --micro-batches $MICRO" $rc
        [ $rc -eq 0 ] && grep -E "^(train|eval|micro-batches):" "$OUT/bench-$config-$dtype.txt" | sed 's/^/     /' | tee -a "$LOG"
    done
done

step "done: $([ $status -eq 0 ] && echo all passed || echo some FAILED) -> $OUT"
exit $status
