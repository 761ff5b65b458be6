"""A row-sharded embedding table over torch.distributed: ``import fastembed_ext.distributed``.

Rank r of a process group of W ranks owns a contiguous, balanced range of
rows (the first ``T % W`` ranks one row more) and allocates only those.  The
network is torch.distributed's (gloo on CPU, or whatever the group runs);
the per-shard compute is this package's: ``gather`` for lookups and the fused
sparse optimizer steps for updates.

One step, on every rank with that rank's own ids (each call is a collective:
every rank of the group makes it, in the same order):

``forward``
    ids are bucketed by owner (a stable sort, so each bucket keeps the
    batch's order); counts, then ids, go to their owners with
    ``all_to_all_single``; each owner gathers its rows and sends them back;
    the caller's order is restored.  The result is ``W[ids]`` of the full
    table, bit for bit.
``backward``
    the gradient rows go to their owners along the same routes.  An owner
    receives them in (source rank, position in that rank's batch) order, and
    keeps them in that order: no dense gradient exists anywhere.
``step``
    each owner applies its entries with the fused sparse steps (``sgd_step``,
    ``adagrad_step``, ``rowwise_adagrad_step``), which coalesce a batch in
    entry order.  So the table after a step is bit for bit the table a single
    process gets from one step over the ranks' batches concatenated in rank
    order.

Bad input (ids out of range, a gradient of the wrong shape) raises on the
rank that passed it, and the others raise ``CollectiveError`` at once: the
ranks exchange a status before any data.  A rank that dies makes the others
raise ``CollectiveError`` as soon as the backend notices (gloo: at once, the
connection drops); a rank that stops calling makes them raise when the
group's timeout expires, so set one: ``init_process_group(...,
timeout=datetime.timedelta(seconds=60))`` (gloo's default is 30 minutes).

Checkpoints are directories: ``index.json`` (sizes, dtype, ``padding_idx``,
the row range of each shard) and one ``.npy`` file per saved shard.  ``load``
memory-maps the shards and copies only its own rows, so a checkpoint reads
into any world size; ``fastembed_ext.Embedding.load`` reads one into a
single process.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist

from . import gather
from . import _checks as ck
from . import _checkpoint

__all__ = ["CollectiveError", "ShardedEmbedding", "ShardedEmbeddingModule", "load"]

# the seeded initial table is drawn block by block, so it does not depend on the world size
_INIT_BLOCK_ROWS = 1 << 14
_DTYPES = ("float16", "float32", "float64", "bfloat16")


class CollectiveError(RuntimeError):
    """Another rank of the group failed the same call, or the group's collectives failed.

    Raised on every rank but the one whose input was bad (which raises its
    own error), and on every surviving rank when a rank died or did not make
    the call within the process group's timeout.
    """


class _Optimizer(Protocol):
    def apply(self, weight: npt.NDArray[Any], indices: npt.ArrayLike, grad: npt.ArrayLike,
              num_threads: int | None = None) -> None: ...


@dataclass
class _Route:
    """Where one forward's ids went: what backward needs to send gradients back."""
    indices: npt.NDArray[Any]       # the caller's indices (for the gradient's shape)
    order: npt.NDArray[np.intp] | None   # batch positions bucketed by owner (None: W == 1)
    send_counts: list[int]          # ids sent to each rank
    recv_counts: list[int]          # ids received from each rank
    recv_ids: npt.NDArray[np.int64]     # local rows asked for, in (source rank, position) order


# --------------------------------------------------------------------------
# rows, dtypes and the group

def row_bounds(num_embeddings: int, world_size: int) -> npt.NDArray[np.int64]:
    """Rank r owns rows ``bounds[r] <= i < bounds[r + 1]``: contiguous, sizes differing by <= 1."""
    q, rem = divmod(int(num_embeddings), int(world_size))
    r = np.arange(world_size + 1, dtype=np.int64)
    return r * q + np.minimum(r, rem)


def _check_size(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _dtype_name(dtype: np.dtype[Any]) -> str:
    return "bfloat16" if ck.is_bfloat16(dtype) else dtype.name


def _value_dtype(dtype: Any) -> np.dtype[Any]:
    if isinstance(dtype, torch.dtype):
        dtype = {torch.float16: np.float16, torch.float32: np.float32,
                 torch.float64: np.float64}.get(dtype, dtype)
    try:
        dt: np.dtype[Any] = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float16, float32 or float64 (or ml_dtypes.bfloat16), "
                        f"got {dtype!r}") from None
    ck.check_value_dtype(np.empty(0, dt), "dtype")
    return dt


def _group_rank(process_group: Any) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "torch.distributed is not initialised: call torch.distributed.init_process_group(...) "
            "on every rank first (with a timeout, so that a lost rank cannot hang the others)")
    rank = dist.get_rank(process_group)
    if rank < 0:
        raise ValueError("this process is not a member of process_group")
    return rank, dist.get_world_size(process_group)


def _bytes(a: npt.NDArray[Any]) -> torch.Tensor:
    """The bytes of ``a`` (n, d), C-contiguous, as a uint8 tensor of shape (n, d * itemsize).

    Rows cross the network as bytes: nothing is converted, so every bit
    (NaN payloads, -0.0) arrives, whatever the dtype."""
    return torch.from_numpy(a.view(np.uint8))


# --------------------------------------------------------------------------
# the table

class ShardedEmbedding:
    """A (T, d) table sharded by rows over a torch.distributed process group.

    The NumPy layer of ``fastembed_ext.Embedding`` (``forward``/``__call__``,
    ``backward``, ``step``, ``save``) where each rank holds only its rows.
    ``forward``, ``backward``, ``full_weight`` and ``save`` are collectives:
    every rank of the group calls them, in the same order.  Building one is a
    collective too (the ranks check that they build the same table).

    Parameters
    ----------
    num_embeddings, embedding_dim : int
    process_group : torch.distributed.ProcessGroup, optional
        The default group when None.
    dtype : float16, float32 or float64 (or ml_dtypes.bfloat16)
    padding_idx : int, optional
        Its row starts at zero and never receives a gradient.
    seed : int, optional
        The table starts as N(0, 1), drawn in blocks of 16384 rows, block b
        from ``numpy.random.default_rng([seed, b])``: the same table for any
        world size (not the numbers ``Embedding(seed=seed)`` draws).
    num_threads : int, optional
        Threads for this rank's gathers and optimizer steps.

    Attributes
    ----------
    weight : ndarray of shape (row_end - row_start, d)
        This rank's rows of the table.
    grad : (rows, values) or None
        After ``backward``: the gradient entries for this rank's rows, global
        row numbers (int64, shape (n,)) and values (n, d), in (source rank,
        position in the batch) order, not coalesced.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, process_group: Any = None,
                 dtype: Any = np.float32, padding_idx: int | None = None,
                 seed: int | None = None, num_threads: int | None = None) -> None:
        def make(rank: int, world: int) -> tuple[npt.NDArray[Any], int, int | None]:
            num_rows = _check_size(num_embeddings, "num_embeddings")
            dim = _check_size(embedding_dim, "embedding_dim")
            dt = _value_dtype(dtype)
            pad = ck.check_padding_idx(padding_idx, num_rows, "the table")
            start, stop = (int(b) for b in row_bounds(num_rows, world)[rank:rank + 2])
            shard = _normal_rows(seed, start, stop, dim, dt)
            if pad is not None and start <= pad < stop:
                shard[pad - start] = 0
            return shard, num_rows, pad

        self._build(process_group, "ShardedEmbedding()", make, num_threads)

    def _build(self, process_group: Any, what: str,
               make: Callable[[int, int], tuple[npt.NDArray[Any], int, int | None]],
               num_threads: int | None) -> None:
        """Make this rank's shard, then agree with the others on the table (a collective)."""
        self.process_group = process_group
        self.rank, self.world_size = _group_rank(process_group)
        error: BaseException | None = None
        meta = [0, 0, 0, 0]
        try:
            shard, num_rows, pad = make(self.rank, self.world_size)
            meta = [num_rows, shard.shape[1], _DTYPES.index(_dtype_name(shard.dtype)),
                    -1 if pad is None else pad]
        except Exception as exc:  # noqa: BLE001 - the others must hear of it before raising
            error = exc
        table = self._agree(what, error, meta)
        if len({tuple(row[1:]) for row in table}) > 1:
            described = "; ".join(
                f"rank {r}: num_embeddings={row[1]}, embedding_dim={row[2]}, "
                f"dtype={_DTYPES[row[3]]}, padding_idx={None if row[4] < 0 else row[4]}"
                for r, row in enumerate(table))
            raise ValueError(f"{what}: every rank must build the same table, got {described}")
        self.weight = shard
        self.padding_idx = pad
        self.num_threads = num_threads
        self.freeze = False
        self.grad: tuple[npt.NDArray[np.int64], npt.NDArray[Any]] | None = None
        self._bounds = row_bounds(num_rows, self.world_size)
        self._route: _Route | None = None

    @classmethod
    def from_full(cls, weight: npt.ArrayLike, *, process_group: Any = None,
                  padding_idx: int | None = None,
                  num_threads: int | None = None) -> ShardedEmbedding:
        """The table ``weight`` (T, d), present on every rank; each rank keeps a copy of its rows.

        ``padding_idx`` is recorded, its row left as it is (as ``from_pretrained``).
        """
        def make(rank: int, world: int) -> tuple[npt.NDArray[Any], int, int | None]:
            w = ck.as_input(weight, "weight")
            ck.check_table(w, "weight")
            pad = ck.check_padding_idx(padding_idx, w.shape[0], "weight")
            start, stop = row_bounds(w.shape[0], world)[rank:rank + 2]
            return np.array(w[start:stop], copy=True, order="C"), int(w.shape[0]), pad

        self = cls.__new__(cls)
        self._build(process_group, "ShardedEmbedding.from_full()", make, num_threads)
        return self

    # ---------------------------------------------------------------- sizes

    @property
    def num_embeddings(self) -> int:
        """Rows of the whole table, T."""
        return int(self._bounds[-1])

    @property
    def embedding_dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.weight.dtype

    @property
    def row_start(self) -> int:
        """The first row this rank owns."""
        return int(self._bounds[self.rank])

    @property
    def row_end(self) -> int:
        """One past the last row this rank owns."""
        return int(self._bounds[self.rank + 1])

    def __repr__(self) -> str:
        return (f"ShardedEmbedding({self.num_embeddings}, {self.embedding_dim}, "
                f"dtype={_dtype_name(self.dtype)}, rank {self.rank} of {self.world_size} "
                f"owns rows [{self.row_start}, {self.row_end}))")

    # -------------------------------------------------------- collectives

    def _fail(self, what: str, exc: BaseException) -> CollectiveError:
        return CollectiveError(
            f"{what} on rank {self.rank} of {self.world_size}: a collective with the other ranks "
            f"failed (a rank stopped, or did not make the same call within the process group's "
            f"timeout): {exc}")

    def _agree(self, what: str, error: BaseException | None,
               meta: Sequence[int] = ()) -> list[list[int]]:
        """Every rank learns which ranks failed before any data moves; then each raises.

        Returns the rows of ``[failed, *meta]`` of every rank."""
        mine = np.array([[error is not None, *meta]] * self.world_size, np.int64)
        table = mine.copy()
        # an all-gather spelled as an all-to-all: one round of pairwise messages
        # (gloo's all_reduce took about twice as long for a few bytes here)
        self._exchange_status(what, table, mine, error, 0)
        rows: list[list[int]] = table.tolist()
        return rows

    def _exchange_status(self, what: str, got: npt.NDArray[np.int64],
                         sent: npt.NDArray[np.int64], error: BaseException | None,
                         failed_column: int) -> None:
        """All-to-all of (W, k) rows, column ``failed_column`` being each rank's
        failure flag; then this rank's own error is raised, or else the others'."""
        if self.world_size > 1:
            try:
                dist.all_to_all_single(torch.from_numpy(got), torch.from_numpy(sent),
                                       group=self.process_group)
            except RuntimeError as exc:
                if error is not None:
                    raise error from None
                raise self._fail(what, exc) from exc
        if error is not None:
            raise error
        failed = got[:, failed_column]
        bad = [r for r in range(self.world_size) if failed[r]]
        if bad:
            who = ", ".join(str(r) for r in bad)
            raise CollectiveError(
                f"{what}: rank {who} of {self.world_size} raised (its own error says why); the "
                f"call was abandoned on every rank and nothing was written")

    def _all_to_all(self, what: str, out: torch.Tensor, inp: torch.Tensor,
                    out_splits: list[int] | None, in_splits: list[int] | None) -> None:
        try:
            dist.all_to_all_single(out, inp, out_splits, in_splits, group=self.process_group)
        except RuntimeError as exc:
            raise self._fail(what, exc) from exc

    # -------------------------------------------------------------- lookup

    def _lookup(self, indices: npt.ArrayLike) -> tuple[npt.NDArray[Any], _Route]:
        what = "ShardedEmbedding.forward"
        d, dt = self.embedding_dim, self.dtype
        W = self.world_size
        error: BaseException | None = None
        try:
            idx = ck.as_indices(indices)
            flat = ck.checked_flat_indices(idx, self.num_embeddings, "the sharded table",
                                           "numpy").astype(np.int64, copy=False)
        except Exception as exc:  # noqa: BLE001 - the others must hear of it first
            error = exc
        if W == 1:
            if error is not None:
                raise error
            out = gather(self.weight, flat, num_threads=self.num_threads)
            route = _Route(idx, None, [flat.size], [flat.size], flat)
            return out.reshape(idx.shape + (d,)), route

        if error is None:
            # owner of each id; a stable sort by owner keeps each bucket in batch order
            owner = np.searchsorted(self._bounds[1:], flat, side="right")
            # (int16 keys: NumPy's stable sort is then a radix sort, O(B))
            keys = owner.astype(np.int16) if W < 1 << 15 else owner
            order = np.argsort(keys, kind="stable")
            send_counts = np.bincount(owner, minlength=W).astype(np.int64)
            send_ids = flat[order] - np.repeat(self._bounds[:-1], send_counts)
        else:
            send_counts = np.zeros(W, np.int64)
        # counts and status in one exchange: [ids for rank p, did I fail]
        header = np.empty((W, 2), np.int64)
        header[:, 0] = send_counts
        header[:, 1] = error is not None
        got = np.empty((W, 2), np.int64)
        self._exchange_status(what, got, header, error, 1)

        recv_counts = got[:, 0].tolist()
        sends = send_counts.tolist()
        recv_ids = np.empty(sum(recv_counts), np.int64)
        self._all_to_all(what, torch.from_numpy(recv_ids), torch.from_numpy(send_ids),
                         recv_counts, sends)
        rows = gather(self.weight, recv_ids, num_threads=self.num_threads)
        bucketed = np.empty((flat.size, d), dt)
        if d * dt.itemsize:
            self._all_to_all(what, _bytes(bucketed), _bytes(rows), sends, recv_counts)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        out = gather(bucketed, inverse, num_threads=self.num_threads)
        return out.reshape(idx.shape + (d,)), _Route(idx, order, sends, recv_counts, recv_ids)

    def forward(self, indices: npt.ArrayLike) -> npt.NDArray[Any]:
        """Rows for this rank's ``indices`` (any integer shape S -> S + (d,)); a collective.

        Bit for bit ``gather(W, indices)`` on the full table W.  Remembers the
        routes for ``backward``.  An id outside ``[0, T)`` raises IndexError
        here, naming its position, and CollectiveError on the other ranks.
        """
        out, self._route = self._lookup(indices)
        return out

    __call__ = forward

    # ------------------------------------------------------------ gradient

    def _send_grad(self, route: _Route,
                   grad_output: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
        what = "ShardedEmbedding.backward"
        d, dt = self.embedding_dim, self.dtype
        error: BaseException | None = None
        try:
            g = ck.as_input(grad_output, "grad_output")
            ck.check_same_dtype(g, "grad_output", self.weight, "the table")
            if g.shape != route.indices.shape + (d,):
                raise ValueError(f"grad_output must have the shape of the last forward's output, "
                                 f"{route.indices.shape + (d,)}, got {g.shape}")
            g2 = g.reshape(route.recv_ids.size if route.order is None else route.order.size, d)
        except Exception as exc:  # noqa: BLE001 - the others must hear of it first
            error = exc
        self._agree(what, error)
        if route.order is None:
            values = np.array(g2, copy=True, order="C")
        else:
            bucketed = gather(g2, route.order, num_threads=self.num_threads)
            values = np.empty((route.recv_ids.size, d), dt)
            if d * dt.itemsize:
                self._all_to_all(what, _bytes(values), _bytes(bucketed), route.recv_counts,
                                 route.send_counts)
        local = route.recv_ids
        pad = self.padding_idx
        if pad is not None and self.row_start <= pad < self.row_end:
            keep = local != pad - self.row_start
            local, values = local[keep], values[keep]
        return local + self.row_start, values

    def backward(self, grad_output: npt.ArrayLike) -> tuple[npt.NDArray[np.int64],
                                                             npt.NDArray[Any]]:
        """Send the gradient of the last ``forward`` to the rows' owners; a collective.

        ``grad_output`` has the shape of that forward's output.  Returns and
        keeps in ``self.grad`` the entries for this rank's rows: global rows
        and values in (source rank, position in the batch) order.  Entries for
        ``padding_idx`` are dropped.
        """
        if self._route is None:
            raise ValueError("backward() needs a forward() first")
        self.grad = self._send_grad(self._route, grad_output)
        return self.grad

    def step(self, optimizer: _Optimizer) -> None:
        """Apply ``self.grad`` to this rank's rows with ``optimizer`` (SGD, Adagrad,
        RowwiseAdagrad), then clear it.  Local: no other rank is involved.

        The fused step coalesces the entries in the order they arrived, so the
        shard ends as the same rows of a single process's table after
        ``optimizer`` applied every rank's batch, concatenated in rank order.
        """
        if self.grad is None:
            raise ValueError("the layer has no gradient: call backward() before step()")
        rows, values = self.grad
        self.grad = None
        if not self.freeze:
            optimizer.apply(self.weight, rows - self.row_start, values, self.num_threads)

    # ------------------------------------------------------- whole table

    def full_weight(self) -> npt.NDArray[Any]:
        """The whole (T, d) table on every rank (for tests and small tables); a collective."""
        if self.world_size == 1:
            return self.weight.copy()
        d, dt = self.embedding_dim, self.dtype
        size = int(np.max(np.diff(self._bounds)))
        padded = np.zeros((size, d), dt)
        padded[:self.weight.shape[0]] = self.weight
        parts = [np.empty((size, d), dt) for _ in range(self.world_size)]
        if size * d * dt.itemsize:
            try:
                dist.all_gather([_bytes(p) for p in parts], _bytes(padded),
                                group=self.process_group)
            except RuntimeError as exc:
                raise self._fail("ShardedEmbedding.full_weight", exc) from exc
        sizes = np.diff(self._bounds)
        return np.concatenate([p[:n] for p, n in zip(parts, sizes)])

    # -------------------------------------------------------- checkpoints

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the table to the directory ``path``; a collective.

        Each rank writes its shard, ``shard-<rank>-of-<W>.npy``; then rank 0
        writes ``index.json`` (sizes, dtype, ``padding_idx`` and each shard's
        rows) and removes shard files of earlier saves that the index does not
        name.  When ``save`` returns on any rank, the checkpoint is complete.
        The optimizer's state is not saved.  On several machines, ``path``
        must be one shared directory.
        """
        what = "ShardedEmbedding.save"
        root = os.fspath(path)
        name = _shard_name(self.rank, self.world_size)
        error: BaseException | None = None
        try:
            os.makedirs(root, exist_ok=True)
            stored = self.weight.view(np.uint16) if ck.is_bfloat16(self.dtype) else self.weight
            _write_atomically(os.path.join(root, name), lambda f: np.save(f, stored))
        except Exception as exc:  # noqa: BLE001 - the others must hear of it first
            error = exc
        self._agree(what, error)
        if self.rank == 0:
            try:
                shards = [{"file": _shard_name(r, self.world_size),
                           "rows": [int(self._bounds[r]), int(self._bounds[r + 1])]}
                          for r in range(self.world_size)]
                index = {
                    "format": _checkpoint.FORMAT, "version": _checkpoint.VERSION,
                    "num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                    "dtype": _dtype_name(self.dtype), "padding_idx": self.padding_idx,
                    "world_size": self.world_size, "shards": shards,
                }
                text = json.dumps(index, indent=1)
                _write_atomically(os.path.join(root, _checkpoint.INDEX), lambda f: f.write(text.encode()))
                keep = {shard["file"] for shard in shards}
                for stale in os.listdir(root):
                    if stale.startswith("shard-") and stale.endswith(".npy") \
                            and stale not in keep:
                        os.remove(os.path.join(root, stale))
            except Exception as exc:  # noqa: BLE001 - the others must hear of it first
                error = exc
        self._agree(what, error)


class ShardedEmbeddingModule(torch.nn.Module):
    """A ``ShardedEmbedding`` as a ``torch.nn.Module``: autograd through it, the
    optimizer step fused into backward.

    ``module(ids)`` (a CPU integer tensor) returns a float tensor that
    requires grad; when autograd reaches it in ``loss.backward()``, the
    gradient goes to the rows' owners and each owner applies ``optimizer``
    at once (TorchRec's fused backward): no gradient is kept and no torch
    optimizer is involved.  With ``optimizer=None`` the entries are kept in
    ``self.sharded.grad`` for ``self.sharded.step(opt)``.  Each lookup's
    backward is its own step.  Forward and backward are collectives: every
    rank runs them, in the same order.

    Parameters
    ----------
    num_embeddings, embedding_dim : int
    optimizer : fastembed_ext.SGD, Adagrad or RowwiseAdagrad, optional
    process_group, padding_idx, seed, num_threads
        As ``ShardedEmbedding``.
    dtype : torch.float16, float32 or float64 (or a NumPy dtype)
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *,
                 optimizer: _Optimizer | None = None, process_group: Any = None,
                 dtype: Any = torch.float32, padding_idx: int | None = None,
                 seed: int | None = None, num_threads: int | None = None,
                 _sharded: ShardedEmbedding | None = None) -> None:
        super().__init__()
        self.sharded = _sharded if _sharded is not None else ShardedEmbedding(
            num_embeddings, embedding_dim, process_group=process_group, dtype=dtype,
            padding_idx=padding_idx, seed=seed, num_threads=num_threads)
        self.optimizer = optimizer
        # autograd calls a Function's backward only if an input requires grad; the table
        # is NumPy, so a zero-size tensor stands in for it (not a Parameter: nothing to optimise)
        self._anchor = torch.zeros(0, requires_grad=True)

    @classmethod
    def from_sharded(cls, sharded: ShardedEmbedding, *,
                     optimizer: _Optimizer | None = None) -> ShardedEmbeddingModule:
        """A module over an existing ``ShardedEmbedding`` (``from_full``, ``load``)."""
        return cls(sharded.num_embeddings, sharded.embedding_dim, optimizer=optimizer,
                   _sharded=sharded)

    @property
    def weight(self) -> torch.Tensor:
        """This rank's rows, as a tensor sharing the shard's memory."""
        return torch.from_numpy(self.sharded.weight)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _ShardedLookup.apply(self._anchor, input, self)  # type: ignore[no-untyped-call]
        return out

    def extra_repr(self) -> str:
        s = self.sharded
        return (f"{s.num_embeddings}, {s.embedding_dim}, rank {s.rank} of {s.world_size}, "
                f"rows [{s.row_start}, {s.row_end})")


class _ShardedLookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, anchor: torch.Tensor, input: torch.Tensor,
                module: ShardedEmbeddingModule) -> torch.Tensor:
        if input.device.type != "cpu":
            raise TypeError(f"input must be a CPU tensor, got a tensor on {input.device}")
        out, ctx.route = module.sharded._lookup(ck.as_input(input.detach(), "input"))
        ctx.module = module
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[None, None, None]:
        module: ShardedEmbeddingModule = ctx.module
        rows, values = module.sharded._send_grad(
            ctx.route, ck.as_input(grad_output.detach(), "grad_output"))
        module.sharded.grad = (rows, values)
        if module.optimizer is not None:
            module.sharded.step(module.optimizer)
        return None, None, None


# --------------------------------------------------------------------------
# checkpoints

def _shard_name(rank: int, world_size: int) -> str:
    return f"shard-{rank:05d}-of-{world_size:05d}.npy"


def _write_atomically(path: str, write: Callable[[Any], Any]) -> None:
    # a reader never sees half a file: write beside it, then rename over it
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path: str | os.PathLike[str], *, process_group: Any = None,
         num_threads: int | None = None) -> ShardedEmbedding:
    """A ``ShardedEmbedding`` from a checkpoint of ``ShardedEmbedding.save``; a collective.

    The group may have any number of ranks: each reads only its own rows
    (the shards are memory-mapped), so 2 ranks' checkpoint loads into 3, or
    1.  ``fastembed_ext.Embedding.load(path)`` reads one into a single process.
    """
    root = os.fspath(path)

    def make(rank: int, world: int) -> tuple[npt.NDArray[Any], int, int | None]:
        index = _checkpoint.read_index(root)
        num_rows = int(index["num_embeddings"])
        start, stop = (int(b) for b in row_bounds(num_rows, world)[rank:rank + 2])
        pad = index.get("padding_idx")
        return _checkpoint.read_rows(root, index, start, stop), num_rows, None if pad is None else int(pad)

    self = ShardedEmbedding.__new__(ShardedEmbedding)
    self._build(process_group, "fastembed_ext.distributed.load()", make, num_threads)
    return self


def _normal_rows(seed: int | None, start: int, stop: int, dim: int,
                 dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """Rows ``[start, stop)`` of the seeded N(0, 1) table, drawn block by block."""
    out = np.empty((stop - start, dim), dtype)
    # seed None: fresh entropy on each rank (each draws only its own rows)
    entropy = int(np.random.SeedSequence(seed).entropy)  # type: ignore[arg-type]
    row = start
    while row < stop:
        block = row // _INIT_BLOCK_ROWS
        first = block * _INIT_BLOCK_ROWS
        last = min(stop, first + _INIT_BLOCK_ROWS)
        rng = np.random.default_rng([entropy, block])
        # a block's numbers are drawn from its start; those before ``row`` are dropped
        values = rng.standard_normal((last - first, dim))[row - first:]
        out[row - start:last - start] = values.astype(dtype)
        row = last
    return out

