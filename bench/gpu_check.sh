#!/usr/bin/env bash
# The GPU checks, in one short run for a machine with at least one CUDA GPU (written before
# any GPU was lent: nothing here has run yet). Writes into ${OUT:-gpu-check}/:
#   profile-gpu.json  the measured CostProfile of one GPU (commit it as dag/profiles/<gpu>.json)
#   run.json, run.txt a short sequential run on --device cuda, its trace and its output
#   pytest.txt        the GPU tests: CUDA lanes and events, and GPU runs against the reference
# Needs the package importable (pip install -e . --no-deps where torch with CUDA is there)
# and the data set at shared/data/wikipedia.csv inside the checkout (ignored by git; a copy
# there travels to a device machine, where ../shared does not) or beside it. Exits 1 when a
# step failed; says which GPU tests were skipped (the 2-rank ones need two GPUs).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
data=shared/data/wikipedia.csv
[ -f "$data" ] || data=../shared/data/wikipedia.csv
if [ ! -f "$data" ]; then
    echo "gpu_check: no wikipedia.csv in shared/data or ../shared/data: copy it there" >&2
    exit 2
fi
export PYTHONUNBUFFERED=1
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -m tgpipe profile --device cuda --nproc 1 --data "$data" --limit-events 30000 \
    -o "$out/profile-gpu.json" 2>&1 | tee "$out/profile.txt" || status=1
python -m tgpipe run --device cuda --nproc 1 --schedule sequential --data "$data" \
    --limit-events 30000 --epochs 2 --trace "$out/run.json" 2>&1 | tee "$out/run.txt" || status=1
python -m pytest -q --import-mode=importlib tests/test_lane_clock.py tests/test_runtime.py \
    -k "gpu or cuda" -rs 2>&1 | tee "$out/pytest.txt" || status=1
if grep -q "skipped" "$out/pytest.txt"; then
    echo "gpu_check: some GPU tests were skipped (see SKIPPED above)" >&2
fi
exit "$status"
