"""The sharded checkpoint format, read without torch.

A checkpoint is a directory: ``index.json`` (sizes, dtype, ``padding_idx``
and each shard's file and rows) and one ``.npy`` per shard (bfloat16 stored
as uint16).  ``distributed`` writes it and reads each rank's rows;
``Embedding.load`` reads the whole table into one process.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import numpy.typing as npt

FORMAT = "fastembed_ext.sharded_embedding"
VERSION = 1
INDEX = "index.json"


def dtype_from_name(name: str) -> np.dtype[Any]:
    if name == "bfloat16":
        import ml_dtypes  # an optional extra: needed only for bfloat16 tables
        bf16: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
        return bf16
    return np.dtype(name)


def read_index(root: str) -> dict[str, Any]:
    where = os.path.join(root, INDEX)
    if not os.path.isfile(where):
        raise FileNotFoundError(f"{root!r} is not a sharded checkpoint: it has no {INDEX}")
    with open(where, encoding="utf-8") as f:
        index: dict[str, Any] = json.load(f)
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ValueError(f"{where} is not a version {VERSION} {FORMAT} index (format "
                         f"{index.get('format')!r}, version {index.get('version')!r})")
    return index


def read_rows(root: str, index: dict[str, Any], start: int, stop: int) -> npt.NDArray[Any]:
    """Rows ``[start, stop)`` of a checkpoint, reading only the shards that hold them."""
    dim = int(index["embedding_dim"])
    dtype = dtype_from_name(index["dtype"])
    stored = np.dtype(np.uint16) if dtype.name == "bfloat16" else dtype
    out = np.empty((stop - start, dim), dtype)
    filled = 0
    for shard in index["shards"]:
        lo, hi = (int(v) for v in shard["rows"])
        a, b = max(lo, start), min(hi, stop)
        if a >= b:
            continue
        where = os.path.join(root, shard["file"])
        data = np.load(where, mmap_mode="r", allow_pickle=False)
        if data.shape != (hi - lo, dim) or data.dtype != stored:
            raise ValueError(f"{where} holds {data.dtype} {data.shape}; its index says "
                             f"{index['dtype']} {(hi - lo, dim)}")
        out[a - start:b - start] = data[a - lo:b - lo].view(dtype)
        filled += b - a
    if filled != stop - start:
        raise ValueError(f"{os.path.join(root, INDEX)}: its shards hold {filled} of rows "
                         f"[{start}, {stop})")
    return out
