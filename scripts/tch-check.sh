#!/usr/bin/env bash
# The libtorch backend: install torch 2.9 from PyPI into a virtual environment,
# build recursa with `tch` against it, and run the backend snapshot/agreement
# tests and the reference fixtures on it. Needs python3 with venv and network
# access to PyPI (about 200 MB from the CPU index; where only PyPI itself is
# reachable, its CUDA wheel, several GB with its NVIDIA libraries, which also runs
# on the CPU), and a C++ compiler for torch-sys. burn 0.21's torch-sys wants
# libtorch 2.9, hence the pin.
#
#   scripts/tch-check.sh [OUT]       (default OUT: tch-check-<date>)
#
# Not part of CI: the download and the torch-sys build do not fit its budget.
set -uo pipefail

OUT=${1:-tch-check-$(date +%Y%m%d-%H%M)}
mkdir -p "$OUT"
VENV=${RECURSA_TCH_VENV:-target/tch-venv}
TORCH=torch==2.9.0
python3 -m venv "$VENV" \
    && { "$VENV/bin/pip" install -q "$TORCH" --index-url https://download.pytorch.org/whl/cpu \
        || "$VENV/bin/pip" install -q "$TORCH"; } \
    || { echo "could not install $TORCH into $VENV" | tee "$OUT/summary.txt"; exit 1; }
export LIBTORCH_USE_PYTORCH=1 PATH="$VENV/bin:$PATH"
TORCH_LIB=$("$VENV/bin/python" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB:${LD_LIBRARY_PATH:-}"

status=0
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "torch: $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
} | tee "$OUT/summary.txt"
INSTA_UPDATE=always cargo test --release -p recursa-tests --features tch --test backends >"$OUT/backend-tests.log" 2>&1 \
    && echo "ok: backend tests on tch" | tee -a "$OUT/summary.txt" \
    || { echo "FAILED: backend tests on tch ($OUT/backend-tests.log)" | tee -a "$OUT/summary.txt"; status=1; }
cp tests/tests/snapshots/backends__forward_tch.snap "$OUT/" 2>/dev/null
cargo build --release -p recursa --features tch >"$OUT/build.log" 2>&1 \
    && ./target/release/recursa verify-reference tests/fixtures/*.safetensors --backend tch \
        >"$OUT/verify-reference.jsonl" 2>"$OUT/verify-reference.log" \
    && echo "ok: reference fixtures on tch" | tee -a "$OUT/summary.txt" \
    || { echo "FAILED: reference fixtures on tch ($OUT/verify-reference.log)" | tee -a "$OUT/summary.txt"; status=1; }
exit $status
