"""Input checks shared by the models: what a dense batch must look like."""
from __future__ import annotations

import torch


def dense_time_major(x, batch_first: bool) -> torch.Tensor:
    """``x`` as a time-major view ``(T, B, F)``, or a clear error.

    Args:
        x: dense input ``(T, B, F)``, or ``(B, T, F)`` when ``batch_first``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor or a PackedSequence, got {type(x).__name__}")
    if x.dim() != 3:
        layout = "(B, T, F)" if batch_first else "(T, B, F)"
        raise ValueError(f"dense input must be 3-D {layout}, got shape {tuple(x.shape)}")
    return x.transpose(0, 1) if batch_first else x
