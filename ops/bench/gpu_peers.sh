#!/usr/bin/env bash
# Issue 26's GPU targets (1-client p50 <= 1.2x the peer's, 8-client throughput >= 3x), for a lent device machine:
#   1. here: fetch openpi and put its serving folder under .data (git-ignored, so it travels only when carried):
#        git -C <openpi mirror> archive HEAD src/openpi/serving | tar -x -C .data/peers/openpi
#   2. run(command="bash ops/bench/gpu_peers.sh", carry=[".data/peers"], timeout_s=400)
# Our stack and both peers load the same tiny policies on the GPU (GPU_DEVICE=auto picks CUDA); PostgreSQL and
# Redis are the embedded servers when the machine has none (ops/stack.py). Figures land in $OUT.
set -u
OUT="${OUT:-.data/gpu-bench}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
SERVER="${OPENPI_SERVER_PATH:-.data/peers/openpi/src/openpi/serving/websocket_policy_server.py}"
[ -f "$SERVER" ] || { echo "no openpi server at $SERVER: carry .data/peers (see the header)"; exit 2; }
if ! "$PY" -c "import torch, transformers, celery, flask_smorest, fastapi, uvicorn, json_numpy" 2>/dev/null; then
  "$PY" -m pip install -q -e '.[bench]' >"$OUT/install-peers.log" 2>&1 || { echo "install failed"; exit 1; }
fi
"$PY" -c "import openpi_client" 2>/dev/null || "$PY" -m pip install -q --no-deps 'openpi-client>=0.1.2' \
  >>"$OUT/install-peers.log" 2>&1
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device-peers.txt"
timeout 330 "$PY" -m ops.bench.peers --openpi-server-path "$SERVER" --duration 8 --rounds 2 --clients 1,8 \
  >"$OUT/peers.log" 2>&1
echo "rc=$?" >>"$OUT/peers.log"
grep -E "clients=|ratios" "$OUT/peers.log"
