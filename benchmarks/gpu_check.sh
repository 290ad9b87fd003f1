#!/usr/bin/env bash
# One prepared GPU session (for the device tool or any CUDA box), run from the repo root:
#   bash benchmarks/gpu_check.sh [DATA] [MINUTES]
# 1. throughput on CUDA: reference fp32 loop vs engine fp32 / bf16, torch.compile on and off;
# 2. the `small` preset trained for a few minutes through the real CLI, then eval + generate.
# Writes everything under ${OUT:-/tmp/ldlm-gpu}. Missing pure-Python wheels may be carried in
# .whl/ (e.g. platformdirs); they are installed into /tmp/site first.
set -u
DATA=${1:-.gpu/tinyshakespeare.txt}
MINUTES=${2:-3}
OUT=${OUT:-/tmp/ldlm-gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 LDLM_HOME="$OUT/home"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
(cd benchmarks && timeout 300 python3 train_throughput.py --device cuda --steps 30 --reps 2 \
   --batch 64 --compile --data "../$DATA") 2>&1 | tee "$OUT/throughput.txt"
STEPS=$((MINUTES * 60 * 20))  # generous: `timeout` stops it (SIGTERM checkpoints) at MINUTES
timeout $((MINUTES * 60)) python3 -m ldlm_tui.cli train --preset small --data "$DATA" \
  --device cuda --max-steps "$STEPS" --eval-every 250 --sample-every 1000 --name gpu-small \
  2>&1 | tail -n 40 | tee "$OUT/small.txt"
python3 -m ldlm_tui.cli eval gpu-small --json 2>&1 | tee "$OUT/eval.json"
python3 -m ldlm_tui.cli generate gpu-small --prompt "ROMEO:" --length 128 --json --no-animate \
  2>&1 | tee "$OUT/generate.json"
python3 -m ldlm_tui.cli generate gpu-small --prompt "ROMEO:" --length 128 --sampler threshold \
  --json --no-animate 2>&1 | tee -a "$OUT/generate.json"
