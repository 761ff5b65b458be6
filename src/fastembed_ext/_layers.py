"""Embedding layers and sparse optimizers for NumPy training loops.

The layers hold a table and call the public operations; they add no rule
of their own beyond PyTorch's layer semantics (``max_norm``
renormalises in ``forward``; ``padding_idx`` rows get no gradient and start
at zero; ``sparse=True`` gives ``(rows, values)`` gradients).
"""

from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _checkpoint
from . import _checks as ck
from ._bag import MODES, embedding_bag, embedding_bag_backward
from ._embedding import embedding_backward, gather
from ._sparse import adagrad_step, coalesce, renorm_, rowwise_adagrad_step, sgd_step

__all__ = ["SGD", "Adagrad", "RowwiseAdagrad", "Embedding", "EmbeddingBag"]


# --------------------------------------------------------------------------
# optimizers: one fused sparse step per call, state kept per table

class _Optimizer:
    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self._state: dict[int, npt.NDArray[Any]] = {}

    def _state_for(self, weight: npt.NDArray[Any], rowwise: bool) -> npt.NDArray[Any]:
        key = id(weight)
        if key not in self._state:
            dtype = np.float64 if weight.dtype == np.float64 else np.float32
            shape = (weight.shape[0],) if rowwise else weight.shape
            self._state[key] = np.zeros(shape, dtype=dtype)
        return self._state[key]

    def apply(self, weight: npt.NDArray[Any], indices: npt.ArrayLike, grad: npt.ArrayLike,
              num_threads: int | None = None) -> None:
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._settings().items())
        return f"{type(self).__name__}({args})"

    def step(self, layer: Embedding) -> None:
        """Apply ``layer``'s last gradient to its table, then clear the gradient."""
        if layer.grad is None:
            raise ValueError("the layer has no gradient: call backward() before step()")
        if layer.freeze:
            layer.grad = None
            return
        if isinstance(layer.grad, tuple):
            rows, values = layer.grad
        else:
            rows, values = np.arange(layer.weight.shape[0]), layer.grad
        self.apply(layer.weight, rows, values, layer.num_threads)
        layer.grad = None


class SGD(_Optimizer):
    """``w[r] -= lr * (g[r] + weight_decay * w[r])`` for each row of the gradient."""

    def apply(self, weight, indices, grad, num_threads=None):  # type: ignore[no-untyped-def]
        sgd_step(weight, indices, grad, lr=self.lr, weight_decay=self.weight_decay,
                 num_threads=num_threads)


class Adagrad(_Optimizer):
    """Element-wise Adagrad; the state is created on first use for each table."""

    def __init__(self, lr: float, eps: float = 1e-10, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.eps = float(eps)

    def _settings(self) -> dict[str, Any]:
        return {"lr": self.lr, "eps": self.eps, "weight_decay": self.weight_decay}

    def apply(self, weight, indices, grad, num_threads=None):  # type: ignore[no-untyped-def]
        adagrad_step(weight, self._state_for(weight, False), indices, grad, lr=self.lr,
                     eps=self.eps, weight_decay=self.weight_decay, num_threads=num_threads)


class RowwiseAdagrad(Adagrad):
    """FBGEMM's row-wise Adagrad: one state value per row."""

    def apply(self, weight, indices, grad, num_threads=None):  # type: ignore[no-untyped-def]
        rowwise_adagrad_step(weight, self._state_for(weight, True), indices, grad,
                             lr=self.lr, eps=self.eps, weight_decay=self.weight_decay,
                             num_threads=num_threads)


# --------------------------------------------------------------------------
# layers

def _check_size(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


_DEFAULTS: dict[str, Any] = {"padding_idx": None, "max_norm": None, "norm_type": 2.0,
                             "scale_grad_by_freq": False, "sparse": False,
                             "include_last_offset": False}


class Embedding:
    """A (T, d) lookup table with PyTorch's ``nn.Embedding`` semantics.

    Parameters
    ----------
    num_embeddings, embedding_dim : int
    padding_idx : int, optional
        Its row starts at zero and never receives a gradient.
    max_norm : float, optional
        Rows looked up in ``forward`` are first renormalised in place
        (``renorm_``) to at most this ``norm_type``-norm.
    scale_grad_by_freq : bool
    sparse : bool
        ``backward`` returns ``(rows, values)`` instead of a dense (T, d) array.
    dtype : float16, float32 or float64 (or ml_dtypes.bfloat16)
    seed : int, optional
        The table starts as N(0, 1), like PyTorch's.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *,
                 padding_idx: int | None = None, max_norm: float | None = None,
                 norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False,
                 dtype: Any = np.float32, seed: int | None = None,
                 num_threads: int | None = None, _weight: npt.NDArray[Any] | None = None) -> None:
        num_embeddings = _check_size(num_embeddings, "num_embeddings")
        embedding_dim = _check_size(embedding_dim, "embedding_dim")
        if _weight is None:
            rng = np.random.default_rng(seed)
            weight = rng.standard_normal((num_embeddings, embedding_dim)).astype(dtype)
        else:
            weight = _weight
        ck.check_updated_table(weight, "weight")
        self.weight = weight
        self.padding_idx = ck.check_padding_idx(padding_idx, num_embeddings, "the table")
        if self.padding_idx is not None and _weight is None:
            self.weight[self.padding_idx] = 0
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = bool(scale_grad_by_freq)
        self.sparse = bool(sparse)
        self.num_threads = num_threads
        self.freeze = False
        self.grad: Any = None
        self._indices: npt.NDArray[Any] | None = None

    @classmethod
    def from_pretrained(cls, embeddings: npt.ArrayLike, *, freeze: bool = True,
                        **kwargs: Any) -> Embedding:
        """A layer over a copy of ``embeddings`` (T, d); ``freeze`` skips optimizer steps."""
        weight = np.array(embeddings, copy=True, order="C")
        layer = cls(weight.shape[0], weight.shape[1], _weight=weight, **kwargs)
        layer.freeze = bool(freeze)
        return layer

    @property
    def num_embeddings(self) -> int:
        return int(self.weight.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.weight.shape[1])

    def forward(self, indices: npt.ArrayLike) -> npt.NDArray[Any]:
        """Rows for ``indices`` (shape S -> S + (d,)); remembers them for ``backward``."""
        idx = np.asarray(indices)
        if self.max_norm is not None:
            renorm_(self.weight, idx, self.max_norm, self.norm_type, num_threads=self.num_threads)
        out = gather(self.weight, idx, num_threads=self.num_threads)
        self._indices = idx
        return out

    __call__ = forward

    def backward(self, grad_output: npt.ArrayLike) -> Any:
        """The table's gradient for the last ``forward``; also kept in ``self.grad``.

        Dense: a (T, d) array.  Sparse: ``(rows, values)`` from ``coalesce``.
        """
        if self._indices is None:
            raise ValueError("backward() needs a forward() first")
        idx = self._indices
        grad: Any
        if self.sparse:
            grad = coalesce(idx, grad_output, padding_idx=self.padding_idx,
                            scale_grad_by_freq=self.scale_grad_by_freq,
                            num_threads=self.num_threads)
        else:
            grad = embedding_backward(grad_output, idx, self.num_embeddings,
                                      padding_idx=self.padding_idx,
                                      scale_grad_by_freq=self.scale_grad_by_freq,
                                      num_threads=self.num_threads)
        self.grad = grad
        return grad

    def step(self, optimizer: _Optimizer) -> None:
        optimizer.step(self)

    def __repr__(self) -> str:
        # the shape first, then only what differs from the defaults, as torch.nn.Embedding
        shown = {k: v for k, v in self._config().items() if v != _DEFAULTS.get(k)}
        if shown.get("max_norm") is None:
            shown.pop("norm_type", None)
        if self.num_threads is not None:
            shown["num_threads"] = self.num_threads
        if self.freeze:
            shown["freeze"] = True
        args = [str(self.num_embeddings), str(self.embedding_dim)]
        args += [f"{k}={v!r}" for k, v in shown.items()]
        if self.weight.dtype != np.float32:
            args.append(f"dtype={self.weight.dtype.name}")
        return f"{type(self).__name__}({', '.join(args)})"

    def save(self, path: str) -> None:
        """``.npy``: the table only; ``.npz``: the table and the layer's settings."""
        if str(path).endswith(".npy"):
            np.save(path, self.weight)
            return
        np.savez(path, weight=self.weight, config=np.array(repr(self._config())))

    def _config(self) -> dict[str, Any]:
        return {"padding_idx": self.padding_idx, "max_norm": self.max_norm,
                "norm_type": self.norm_type, "scale_grad_by_freq": self.scale_grad_by_freq,
                "sparse": self.sparse}

    @classmethod
    def load(cls, path: str, **kwargs: Any) -> Embedding:
        """A layer from ``save``: ``.npy`` (settings from ``kwargs``) or ``.npz``; or
        from a directory written by ``fastembed_ext.distributed.ShardedEmbedding.save``
        (the shards joined into one table, ``padding_idx`` from its index)."""
        if os.path.isdir(path):
            index = _checkpoint.read_index(path)
            weight = _checkpoint.read_rows(path, index, 0, int(index["num_embeddings"]))
            config = {"padding_idx": index.get("padding_idx"), **kwargs}
            return cls.from_pretrained(weight, freeze=False, **config)
        if str(path).endswith(".npy"):
            return cls.from_pretrained(np.load(path), freeze=False, **kwargs)
        with np.load(path, allow_pickle=False) as data:
            import ast
            config = ast.literal_eval(str(data["config"]))
            config.update(kwargs)
            return cls.from_pretrained(data["weight"], freeze=False, **config)


class EmbeddingBag(Embedding):
    """Bags of rows reduced by ``mode`` ("sum", "mean" or "max"), as ``nn.EmbeddingBag``."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, mode: str = "mean",
                 include_last_offset: bool = False, **kwargs: Any) -> None:
        if kwargs.get("scale_grad_by_freq"):
            raise ValueError("EmbeddingBag does not support scale_grad_by_freq")
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        self.mode: Any = ck.check_choice(mode, "mode", MODES)
        self.include_last_offset = bool(include_last_offset)
        self._bag: tuple[Any, ...] | None = None
        self.grad_per_sample_weights: Any = None

    def forward(self, indices: npt.ArrayLike, offsets: npt.ArrayLike | None = None,
                per_sample_weights: npt.ArrayLike | None = None) -> npt.NDArray[Any]:
        idx = np.asarray(indices)
        if self.max_norm is not None:
            renorm_(self.weight, idx, self.max_norm, self.norm_type, num_threads=self.num_threads)
        res = embedding_bag(self.weight, idx, offsets, mode=self.mode,
                            per_sample_weights=per_sample_weights,
                            include_last_offset=self.include_last_offset,
                            padding_idx=self.padding_idx, num_threads=self.num_threads)
        out: npt.NDArray[Any]
        out, max_indices = res if self.mode == "max" else (res, None)
        self._bag = (idx, offsets, per_sample_weights, max_indices)
        self._indices = idx
        return out

    __call__ = forward

    def backward(self, grad_output: npt.ArrayLike) -> Any:
        if self._bag is None:
            raise ValueError("backward() needs a forward() first")
        idx, offsets, psw, max_indices = self._bag
        grad: Any
        grad, self.grad_per_sample_weights = embedding_bag_backward(
            grad_output, idx, offsets, self.num_embeddings, mode=self.mode,
            per_sample_weights=psw, weight=self.weight if psw is not None else None,
            max_indices=max_indices, include_last_offset=self.include_last_offset,
            padding_idx=self.padding_idx, num_threads=self.num_threads)
        if self.sparse:
            touched = np.unique(max_indices[max_indices >= 0] if self.mode == "max"
                                else np.asarray(idx).reshape(-1))
            if self.padding_idx is not None:
                touched = touched[touched != self.padding_idx]
            grad = (touched.astype(np.int64), grad[touched])
        self.grad = grad
        return grad

    def _config(self) -> dict[str, Any]:
        config = super()._config()
        config.update(mode=self.mode, include_last_offset=self.include_last_offset)
        config.pop("scale_grad_by_freq")
        return config
