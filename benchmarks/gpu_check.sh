#!/usr/bin/env bash
# Every CUDA row of train_speed in one go (under 8 minutes on one H100/H200): bf16 at the demo
# and paper sizes, fp32 and torch.compile for the tsf pretrain/finetune rows at the paper size.
# The GPU image lacks nibabel, blosc2 and batchgenerators: they come as wheels from .whl/.
# Run from the repository root: bash benchmarks/gpu_check.sh
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
common=(--work /tmp/tsfnet_train_speed --device cuda --warmup 10 --steps 20 --bare 5 --workers 8)
tsf=tsf-pretrain-sample,tsf-pretrain-batch,tsf-finetune-sample,tsf-finetune-batch
timeout 240 python3 benchmarks/train_speed.py "${common[@]}" --sizes demo,paper --precision bf16
timeout 90 python3 benchmarks/train_speed.py "${common[@]}" --sizes paper --rows "$tsf" --precision fp32
timeout 150 python3 benchmarks/train_speed.py "${common[@]}" --sizes paper --rows tsf-pretrain-batch,tsf-finetune-batch \
    --precision bf16 --compile
