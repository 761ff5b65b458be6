"""PyTorch integration: ``import fastembed_ext.torch`` (needs torch; CPU tensors only).

``embedding(input, weight, ...)`` and the ``Embedding`` module run the forward
gather and the backward scatter-add of ``torch.nn.Embedding`` through
fastembed_ext.  Tensors cross by DLPack without a copy: the forward output and
the weight gradient are NumPy arrays that the returned tensors share.

For float32 and float64 the weight gradient equals PyTorch's own bit for bit
whenever PyTorch accumulates in index order (plain and ``padding_idx``
backward); with ``scale_grad_by_freq`` the scaled rows follow fastembed_ext's
rule (multiply, round, then add), which PyTorch may fuse.

float16 tensors cross as they are.  bfloat16 tensors need ``ml_dtypes``: their
bits are read as ``ml_dtypes.bfloat16`` (NumPy has no bfloat16 of its own),
and the gradient is the bits of ``np.add.at`` on that dtype (float32 add,
rounded to bfloat16 after every add), which need not be PyTorch's.  Without
``ml_dtypes`` a bfloat16 ``Embedding`` is refused when it is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._checks import as_input
from ._embedding import embedding_backward, gather

__all__ = ["Embedding", "EmbeddingFunction", "embedding"]


def _bfloat16() -> Any:
    """``ml_dtypes.bfloat16``, or a TypeError that says what to install."""
    try:
        import ml_dtypes  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise TypeError("bfloat16 tensors need ml_dtypes to be read as NumPy arrays: "
                        "pip install ml_dtypes (or use float16, float32 or float64)") from None
    return ml_dtypes.bfloat16


def _as_numpy_view(t: torch.Tensor, name: str) -> Any:
    if t.device.type != "cpu":
        raise TypeError(f"{name} must be a CPU tensor, got a tensor on {t.device}")
    if t.dtype == torch.bfloat16:
        # DLPack has a bfloat16 code that NumPy does not read: cross as int16, same bits
        bf16 = _bfloat16()
        return as_input(t.detach().view(torch.int16), name).view(bf16)
    return as_input(t.detach(), name)


def _as_tensor(a: Any) -> torch.Tensor:
    """A tensor sharing ``a``'s memory (an ml_dtypes.bfloat16 array becomes torch.bfloat16)."""
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


class EmbeddingFunction(torch.autograd.Function):
    """Autograd function: forward = gather, backward = embedding_backward."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, indices: torch.Tensor,
                padding_idx: int | None, scale_grad_by_freq: bool,
                num_threads: int | None) -> torch.Tensor:
        w = _as_numpy_view(weight, "weight")
        idx = _as_numpy_view(indices, "indices")
        out = gather(w, idx, num_threads=num_threads)
        ctx.save_for_backward(indices)
        ctx.num_weights = weight.shape[0]
        ctx.padding_idx = padding_idx
        ctx.scale_grad_by_freq = scale_grad_by_freq
        ctx.num_threads = num_threads
        return _as_tensor(out)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        (indices,) = ctx.saved_tensors
        grad_weight = embedding_backward(
            _as_numpy_view(grad_output, "grad_output"), _as_numpy_view(indices, "indices"),
            ctx.num_weights, padding_idx=ctx.padding_idx,
            scale_grad_by_freq=ctx.scale_grad_by_freq, num_threads=ctx.num_threads)
        return _as_tensor(grad_weight), None, None, None, None


def embedding(input: torch.Tensor, weight: torch.Tensor, padding_idx: int | None = None,
              scale_grad_by_freq: bool = False, num_threads: int | None = None) -> torch.Tensor:
    """``torch.nn.functional.embedding`` through fastembed_ext (no max_norm, dense gradient)."""
    out: torch.Tensor = EmbeddingFunction.apply(  # type: ignore[no-untyped-call]
        weight, input, padding_idx, scale_grad_by_freq, num_threads)
    return out


class Embedding(torch.nn.Embedding):
    """A ``torch.nn.Embedding`` whose forward and backward run through fastembed_ext.

    ``max_norm`` and ``sparse=True`` are not supported (a ValueError says so);
    a bfloat16 table needs ``ml_dtypes`` (a TypeError says so when it is
    built).  Everything else, ``from_pretrained`` included, is inherited.
    """

    def __init__(self, *args: Any, num_threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.max_norm is not None:
            raise ValueError("fastembed_ext.torch.Embedding does not support max_norm "
                             "(use torch.nn.Embedding, or fastembed_ext.Embedding)")
        if self.sparse:
            raise ValueError("fastembed_ext.torch.Embedding does not support sparse=True "
                             "(its gradient is dense; fastembed_ext.Embedding has sparse=True)")
        if self.weight.dtype == torch.bfloat16:
            _bfloat16()
        elif self.weight.dtype not in (torch.float16, torch.float32, torch.float64):
            raise TypeError(f"fastembed_ext.torch.Embedding needs a float16, float32, float64 "
                            f"or bfloat16 table, got {self.weight.dtype}")
        self.num_threads = num_threads

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.weight.dtype != torch.float32:
            text += f", dtype={self.weight.dtype}"
        if self.num_threads is not None:
            text += f", num_threads={self.num_threads}"
        return text

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return embedding(input, self.weight, self.padding_idx, self.scale_grad_by_freq,
                         self.num_threads)
