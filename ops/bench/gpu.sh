#!/usr/bin/env bash
# The GPU figures the issues ask for, in one short run for a lent device machine (see docs/benchmarks.md):
#   run(command="bash ops/bench/gpu.sh", timeout_s=595)
# It installs nothing heavy: the machine's own torch is used when present, else the project's pins.
# Each step has its own time limit, so one slow step cannot eat the others; every figure lands in $OUT.
set -u
OUT="${OUT:-.data/gpu-bench}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch, transformers, timm, celery, flask_smorest" 2>/dev/null; then
  "$PY" -m pip install -q -e . >"$OUT/install.log" 2>&1 || { echo "install failed; see install.log"; exit 1; }
fi
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"
step() {  # step NAME SECONDS COMMAND...
  local name=$1 secs=$2; shift 2
  echo "== $name"
  timeout "$secs" "$PY" -m "$@" >"$OUT/$name.log" 2>&1; echo "rc=$?" >>"$OUT/$name.log"
  tail -n 3 "$OUT/$name.log"
}
# First the CUDA-only correctness tests (CUDA-graph decode = eager static step, bf16 batch = singles): a figure
# from a path that is wrong is worth nothing. Then the timings; each policy step also times the stock path
# (transformers' generate / sample_actions) interleaved with ours, which doubles its work.
step gpu_tests 60 pytest -q -m gpu tests/workers/policies -p no:cacheprovider
step policy_openvla 220 ops.bench.policy_latency --models openvla --device cuda --dtype bfloat16 --bandwidth-gbs 3350
step policy_pi0 140 ops.bench.policy_latency --models pi0 --device cuda --dtype bfloat16 --bandwidth-gbs 3350
step batching 150 ops.bench.batching --full --device cuda --dtype bfloat16 --clients 1,8 --max-batch 8 --duration 5
