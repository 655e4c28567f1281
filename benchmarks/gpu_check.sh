#!/usr/bin/env bash
# Every CUDA row in one go (under 8 minutes on one H100/H200): train_speed in bf16 at the demo
# and paper sizes (tasks per sample and per batch, the prefetched loader), fp32 and
# torch.compile for the tsf pretrain/finetune rows at the paper size, and predict_speed's
# seconds per BraTS-sized case split into read / preprocess / network / restore / write.
# The GPU image lacks nibabel, blosc2 and batchgenerators: they come as wheels from .whl/.
# Run from the repository root: bash benchmarks/gpu_check.sh
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
common=(--work /tmp/tsfnet_train_speed --device cuda --warmup 10 --steps 20 --bare 5 --workers 8)
tsf=tsf-pretrain-sample,tsf-pretrain-batch,tsf-finetune-sample,tsf-finetune-batch
run() {  # one benchmark under a time limit; a failure is reported and the next one still runs
    timeout "$@" || echo "gpu_check: '${*:2}' failed or ran past ${1} s" >&2
}
run 60 python3 benchmarks/predict_speed.py --device cuda
run 210 python3 benchmarks/train_speed.py "${common[@]}" --sizes demo,paper --precision bf16
run 80 python3 benchmarks/train_speed.py "${common[@]}" --sizes paper --rows "$tsf" --precision fp32
run 130 python3 benchmarks/train_speed.py "${common[@]}" --sizes paper --rows tsf-pretrain-batch,tsf-finetune-batch \
    --precision bf16 --compile
