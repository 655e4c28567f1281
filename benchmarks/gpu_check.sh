#!/usr/bin/env bash
# Every CUDA check on one H100/H200, by part (default: all, about 13 minutes, so on a 15-minute
# lease run it as two calls: `tests predict train`, then `demo fp32 compile`):
#   tests    the CUDA paths of the unit tests (the prefetcher's pinned copy on a side stream)
#   predict  predict_speed: seconds per BraTS-sized case, split into read / preprocess / network / restore / write
#   train    train_speed in bf16 at the demo and paper sizes (tasks per sample and per batch, the prefetched loader)
#   demo     `tsfnet demo` as a user runs it (--device auto picks the GPU), timed, into $DEMO_DIR
#   fp32     train_speed's tsf rows at the paper size in fp32
#   compile  train_speed's per-batch tsf rows at the paper size with torch.compile
# The GPU image lacks nibabel, blosc2 (+ndindex, numexpr), batchgenerators (+future) and nilearn:
# they come as wheels from .whl/ (benchmarks/README.md says how to fetch them).
# Run from the repository root: bash benchmarks/gpu_check.sh [part ...]
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
DEMO_DIR=${DEMO_DIR:-/tmp/tsfnet_demo_cuda}
common=(--work /tmp/tsfnet_train_speed --device cuda --warmup 10 --steps 20 --bare 5 --workers 8)
tsf=tsf-pretrain-sample,tsf-pretrain-batch,tsf-finetune-sample,tsf-finetune-batch

limit() {  # one check under a time limit; a failure is reported and the next part still runs
    local began=$SECONDS
    timeout "$@" || echo "gpu_check: '${*:2}' failed or ran past ${1} s" >&2
    echo "gpu_check: '${*:2}' took $((SECONDS - began)) s" >&2
}

part() {
    case $1 in
    tests) limit 60 python3 -m pytest -q -p no:cacheprovider tests/test_prefetch.py tests/test_devices.py ;;
    predict) limit 90 python3 benchmarks/predict_speed.py --device cuda ;;
    train) limit 240 python3 benchmarks/train_speed.py "${common[@]}" --sizes demo,paper --precision bf16 ;;
    demo) limit 240 python3 -m tsfnet demo -o "$DEMO_DIR" --overwrite ;;
    fp32) limit 120 python3 benchmarks/train_speed.py "${common[@]}" --sizes paper --rows "$tsf" --precision fp32 ;;
    compile)
        limit 200 python3 benchmarks/train_speed.py "${common[@]}" --sizes paper \
            --rows tsf-pretrain-batch,tsf-finetune-batch --precision bf16 --compile
        ;;
    *) echo "gpu_check: unknown part '$1' (tests, predict, train, demo, fp32, compile)" >&2 ;;
    esac
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
parts=("$@")
[ $# -gt 0 ] || parts=(tests predict train demo fp32 compile)
for name in "${parts[@]}"; do part "$name"; done
