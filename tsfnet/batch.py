"""What a training step receives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import torch


@dataclass
class Batch:
    images: torch.Tensor  # (B, N, Cin, *S); non-sources are never encoded
    source_mask: torch.Tensor  # (B, N) float 0/1
    target: torch.Tensor  # (B,) long
    target_image: torch.Tensor  # (B, 1, *S)
    brain_mask: torch.Tensor  # (B, 1, *S) bool
    label: torch.Tensor | None = None  # (B, *S) long
    available: torch.Tensor | None = None  # (B, N) float 0/1: the sequences the case has
    # The sources, when every sample has the same sources and target: known on the host when
    # the batch is built, so the model indexes them statically (no device sync, no graph break).
    shared_sources: tuple[int, ...] | None = field(default=None, kw_only=True)

    @property
    def shared_task(self) -> bool:
        return self.shared_sources is not None

    @property
    def target_slices(self) -> torch.Tensor:
        """(B, Cin, *S): every context slice of the target, for a head that predicts them all."""
        return self.images[torch.arange(len(self.target), device=self.target.device), self.target]

    def reference_for(self, output: torch.Tensor) -> torch.Tensor:
        """What a synthesis of the target is compared with (`slices_like`)."""
        return slices_like(self.target_slices, output)

    @property
    def task_target(self) -> torch.Tensor:
        """The target as the model takes it: (1,) when the batch shares its task, so every
        HyperConv runs one dense convolution, else (B,)."""
        return self.target[:1] if self.shared_task else self.target

    def to(self, device: torch.device) -> Batch:
        """On `device`; the copies are asynchronous when the batch is pinned (`pin_memory`)."""
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:
        """In page-locked host memory, which CUDA copies from without blocking the host."""
        return self._map(torch.Tensor.pin_memory)

    def record_stream(self, stream: torch.cuda.Stream) -> None:
        """Tell the CUDA allocator that `stream` uses these tensors (they were made on another)."""
        for value in self._tensors().values():
            value.record_stream(stream)

    def _tensors(self) -> dict[str, torch.Tensor]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}

    def _map(self, change: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        return replace(self, **{k: change(v) for k, v in self._tensors().items()})


def slices_like(images: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """(B, Cin, *S) context slices as a head's `output` is compared with them: all of them
    (`output_slices`), or the centre one (B, 1, *S)."""
    if output.shape[1] > 1:
        return images
    centre = images.shape[1] // 2
    return images[:, centre : centre + 1]
