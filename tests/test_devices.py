"""Device and precision policy: what runs in bf16 where."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tsfnet.devices import autocast, inference_batch_size, native_bf16, resolve_precision
from tsfnet.errors import TsfnetError
from tsfnet.training.runner import Runner, TrainOptions
from tsfnet.training.stages import FUSED_ADAM_DEVICES, adam

CPU = torch.device("cpu")


def test_auto_precision_is_bf16_only_where_the_cpu_has_it(monkeypatch):
    assert resolve_precision(CPU, "auto") == ("bf16" if native_bf16(CPU) else "fp32")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert not native_bf16(CPU) and resolve_precision(CPU, "auto") == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert resolve_precision(CPU, "auto") == "bf16"
    assert resolve_precision(CPU, "fp32") == "fp32" and resolve_precision(CPU, "bf16") == "bf16"


def test_unknown_precision_is_one_line():
    with pytest.raises(TsfnetError, match="unknown --precision 'fp16'; use auto, bf16 or fp32"):
        resolve_precision(CPU, "fp16")


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_autocast_on_the_cpu_follows_the_precision(precision, dtype):
    conv = torch.nn.Conv2d(2, 3, 3)
    with torch.no_grad(), autocast(CPU, precision):
        assert conv(torch.randn(1, 2, 8, 8)).dtype == dtype


def test_cpu_defaults_small_batches_and_trains_in_bf16_only_where_native(store, tmp_path, monkeypatch):
    assert inference_batch_size(CPU) == 2 and inference_batch_size(torch.device("cuda")) == 16

    def runner(precision: str) -> Runner:
        return Runner(TrainOptions(store=store, output=tmp_path, device="cpu", precision=precision, progress=False))

    assert runner("auto").precision == ("bf16" if native_bf16(CPU) else "fp32")
    assert runner("fp32").precision == "fp32" and runner("bf16").precision == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert runner("auto").precision == "fp32"


def test_adam_is_fused_on_the_cpu_and_not_on_cuda():
    """CUDA's fused Adam turned bf16 training NaN from finite gradients where its default Adam
    trained on (benchmarks/results/gpu_check_2026-11-27.md)."""
    assert adam([nn.Parameter(torch.zeros(3))], 1e-3).defaults["fused"] is True
    assert "cuda" not in FUSED_ADAM_DEVICES
    if torch.cuda.is_available():
        assert not adam([nn.Parameter(torch.zeros(3, device="cuda"))], 1e-3).defaults["fused"]
