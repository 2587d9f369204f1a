#!/usr/bin/env bash
# One prepared GPU check, about 9 minutes: bound soundness on CUDA, bench_train, bench_bounds, the same
# evaluation on CUDA and on the CPU (verdicts that differ, times: device_verdicts.py), and as
# much of a paper-schedule Table 1 learned ε0 = 0.4 run as fits (data kept on the device).
#
#   PYTHONPATH=src bash benchmarks/gpu_check.sh DATA_DIR [OUT]
#
# DATA_DIR holds mnist/ (IDX files); OUT (default: $OUT, else runs/gpu-check) receives one Markdown
# file per part and gpu_check.md that joins them. Without a CUDA device every CUDA part is skipped
# (said so in the output) and only the CPU soundness check runs: that is what the test suite runs.
# Budget (seconds, each part under `timeout`): soundness 60, bench_train 120, bench_bounds 120, verdicts 120,
# training 180
# (GPU_CHECK_TRAIN_SECONDS overrides the last: e.g. 60 when benchmarks/gpu_rows.py trains rows after it).
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: gpu_check.sh DATA_DIR [OUT]}
OUT=${2:-${OUT:-runs/gpu-check}}
PY=${PYTHON:-python}
mkdir -p "$OUT"
report="$OUT/gpu_check.md"
cuda=$($PY -c "import torch; print(int(torch.cuda.is_available()))")
{
  echo "# GPU check, $(date -u +%F)"
  echo
  $PY -c "import torch; print('torch', torch.__version__, '| device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
} > "$report"
part() {  # part NAME SECONDS COMMAND...: run one part under a timeout, keep its output and exit status
  local name=$1 secs=$2; shift 2
  echo "== $name" >&2
  local start=$(date +%s)
  timeout "$secs" "$@" > "$OUT/$name.md" 2>&1
  local rc=$?
  { echo; echo "## $name (exit $rc, $(( $(date +%s) - start )) s)"; echo; cat "$OUT/$name.md"; } >> "$report"
}
if [ "$cuda" != "1" ]; then
  part soundness-cpu 300 $PY benchmarks/gpu_soundness.py --device cpu --methods ibp,crown-ibp
  echo; echo "no CUDA device: bench_train, bench_bounds and the training part skipped" | tee -a "$report"
  exit 0
fi
part soundness-cuda 60 $PY benchmarks/gpu_soundness.py --device cuda
part bench-train 120 $PY benchmarks/bench_train.py --data-dir "$DATA" --device cuda --steps 20
part bench-bounds 120 $PY benchmarks/bench_bounds.py --device cuda --steps 10
part verdicts-cuda-vs-cpu 120 $PY benchmarks/device_verdicts.py --limit 2000 --devices cpu,cuda
part train-paper-0.4 "${GPU_CHECK_TRAIN_SECONDS:-180}" $PY -m ctxbudget train --config mnist-learned-0.4 --data-dir "$DATA" --device cuda \
    --out "$OUT/table1-learned-0.4" --no-progress
cp "$OUT/table1-learned-0.4/metrics.jsonl" "$OUT/" 2>/dev/null || true
echo "wrote $report"
