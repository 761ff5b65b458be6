"""Skip-gram word vectors with negative sampling, NumPy + fastembed_ext only.

The corpus is the docstrings of the Python standard library installed next to
this interpreter (read with ``ast``, nothing imported), so it runs on any
machine with Python.  Each step gathers the centre and context rows, computes
the negative-sampling loss and its gradients with NumPy, and applies sparse
SGD to both tables with ``fastembed_ext.sgd_step`` (which coalesces repeated
rows first).  It prints the loss falling, words per second for the compiled
and the NumPy backends, and the nearest neighbours of a few words.

With ``--world-size 2`` both tables are sharded by rows over two processes
(``fastembed_ext.distributed``, torch.distributed with gloo on 127.0.0.1):
rank r trains on the r-th half of each batch, and the run prints the same
losses and the same table digest as one process.  Under ``torchrun`` the
script joins torchrun's group instead.

    python examples/skipgram.py                 # a few minutes
    python examples/skipgram.py --steps 300     # a quick look
    python examples/skipgram.py --steps 300 --world-size 2
    torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 examples/skipgram.py        # on each of two machines
"""

from __future__ import annotations

import argparse
import ast
import collections
import hashlib
import os
import re
import sysconfig
import time

import numpy as np

import fastembed_ext as fe

WORD = re.compile(r"[a-z]+")


def stdlib_docstrings(limit_files: int | None = None) -> list[str]:
    root = sysconfig.get_paths()["stdlib"]
    texts = []
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "test", "tests",
                                                              "idlelib", "__pycache__"))
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    for path in files[:limit_files]:
        try:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    texts.append(doc)
    return texts


def build_corpus(texts, min_count=5, max_vocab=20000):
    words = [w for t in texts for w in WORD.findall(t.lower())]
    counts = collections.Counter(words)
    vocab = [w for w, c in counts.most_common(max_vocab) if c >= min_count]
    index = {w: i for i, w in enumerate(vocab)}
    ids = np.array([index[w] for w in words if w in index], dtype=np.int64)
    freq = np.array([counts[w] for w in vocab], dtype=np.float64)
    return vocab, ids, freq


def training_pairs(rng, ids, batch, window):
    centre_pos = rng.integers(window, ids.shape[0] - window, batch)
    offset = rng.integers(1, window + 1, batch) * rng.choice([-1, 1], batch)
    return ids[centre_pos], ids[centre_pos + offset]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def initial_tables(rng, vocab_size, dim):
    w_in = ((rng.random((vocab_size, dim), dtype=np.float32) - 0.5) / dim).astype(np.float32)
    w_out = np.zeros((vocab_size, dim), np.float32)
    return w_in, w_out


class LocalTables:
    """Both tables whole, in this process: ``fe.gather`` and ``fe.sgd_step``."""

    rank, world_size = 0, 1

    def __init__(self, w_in, w_out, lr, backend="auto"):
        self.tables = {"in": w_in, "out": w_out}
        self.lr, self.backend = lr, backend

    def lookup(self, name, ids):
        return fe.gather(self.tables[name], ids, backend=self.backend)

    def update(self, name, ids, grad):
        fe.sgd_step(self.tables[name], ids, grad, lr=self.lr, backend=self.backend)

    def full(self, name):
        return self.tables[name]

    def all_losses(self, losses):
        return losses


class ShardedTables:
    """Both tables sharded by rows over the default torch.distributed group.

    Each rank looks up and updates with its own slice of the batch; the
    owners apply the gradient entries in (rank, position) order, which is the
    batch's own order when rank r holds the r-th slice: so every step leaves
    the same bits as ``LocalTables``.
    """

    def __init__(self, w_in, w_out, lr):
        import torch.distributed as dist

        import fastembed_ext.distributed as dfe
        self.dist = dist
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.tables = {"in": dfe.ShardedEmbedding.from_full(w_in),
                       "out": dfe.ShardedEmbedding.from_full(w_out)}
        self.optimizer = fe.SGD(lr=lr)

    def lookup(self, name, ids):
        return self.tables[name](ids)

    def update(self, name, ids, grad):   # ids: those of this table's last lookup
        table = self.tables[name]
        table.backward(grad)
        table.step(self.optimizer)

    def full(self, name):
        return self.tables[name].full_weight()

    def all_losses(self, losses):
        """Every rank's per-pair losses, in rank order (so the mean is computed as one
        process computes it)."""
        import torch
        n = torch.tensor([losses.shape[0]])
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        self.dist.all_gather(sizes, n)
        most = int(max(sizes))
        padded = np.zeros(most, losses.dtype)
        padded[:losses.shape[0]] = losses
        parts = [torch.zeros(most, dtype=torch.from_numpy(padded).dtype)
                 for _ in range(self.world_size)]
        self.dist.all_gather(parts, torch.from_numpy(padded))
        return np.concatenate([p.numpy()[:int(k)] for p, k in zip(parts, sizes)])


def train(ids, vocab_size, noise, tables, rng, *, steps, batch, negatives, window,
          report_every=0, label=""):
    """Skip-gram steps; with several ranks, rank r takes the r-th slice of each batch."""
    lo = tables.rank * batch // tables.world_size
    hi = (tables.rank + 1) * batch // tables.world_size
    losses = []
    window_losses = []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        # every rank draws the whole batch (the same numbers), then keeps its slice
        centre, context = training_pairs(rng, ids, batch, window)
        neg = rng.choice(vocab_size, size=(batch, negatives), p=noise)
        centre, context, neg = centre[lo:hi], context[lo:hi], neg[lo:hi]
        rows_out = np.concatenate([context[:, None], neg], axis=1)        # (b, 1 + K)
        h = tables.lookup("in", centre)                                    # (b, d)
        u = tables.lookup("out", rows_out)                                 # (b, 1 + K, d)
        s = np.einsum("bd,bkd->bk", h, u)                                  # scores
        pair_loss = -np.log(sigmoid(s[:, 0]) + 1e-7) - np.log(sigmoid(-s[:, 1:]) + 1e-7).sum(1)
        g = sigmoid(s).astype(np.float32)                                  # d loss / d s
        g[:, 0] -= 1.0
        d_h = np.einsum("bk,bkd->bd", g, u)
        d_u = g[:, :, None] * h[:, None, :]
        tables.update("in", centre, d_h.astype(np.float32))
        tables.update("out", rows_out, d_u.astype(np.float32))
        window_losses.append(float(tables.all_losses(pair_loss).mean()))
        if report_every and step % report_every == 0:
            losses.append(float(np.mean(window_losses)))
            window_losses = []
            if tables.rank == 0:
                print(f"  {label} step {step:>6}: loss {losses[-1]:.4f}", flush=True)
    elapsed = time.perf_counter() - t0
    if window_losses:
        losses.append(float(np.mean(window_losses)))
    words_per_s = steps * batch / elapsed
    return losses, words_per_s


def nearest(w, vocab, word, k=5):
    if word not in vocab:
        return []
    x = w / (np.linalg.norm(w, axis=1, keepdims=True) + 1e-9)
    i = vocab.index(word)
    sims = x @ x[i]
    sims[i] = -np.inf
    return [vocab[j] for j in np.argsort(-sims)[:k]]


def table_digest(tables):
    h = hashlib.sha256()
    for name in ("in", "out"):
        h.update(np.ascontiguousarray(tables.full(name)).tobytes())
    return h.hexdigest()[:16]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--negatives", type=int, default=5)
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.025)
    p.add_argument("--files", type=int, default=None, help="read only this many stdlib files")
    p.add_argument("--numpy-steps", type=int, default=None,
                   help="steps for the NumPy-backend timing run (default: steps // 10; "
                        "0: no such run)")
    p.add_argument("--world-size", type=int, default=1,
                   help="shard both tables over this many processes on this machine "
                        "(torch.distributed, gloo on 127.0.0.1); under torchrun, its world size")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def run(args, tables_for):
    """Train and report; ``tables_for(w_in, w_out)`` makes local or sharded tables."""
    texts = stdlib_docstrings(args.files)
    vocab, ids, freq = build_corpus(texts)
    noise = freq ** 0.75
    noise /= noise.sum()
    rng = np.random.default_rng(args.seed)
    tables = tables_for(*initial_tables(rng, len(vocab), args.dim))
    first = tables.rank == 0
    if first:
        print(f"corpus: {len(texts)} stdlib docstrings, {ids.shape[0]} words, "
              f"vocabulary {len(vocab)}")
        if tables.world_size > 1:
            print(f"tables sharded over {tables.world_size} ranks")
    common = dict(batch=args.batch, negatives=args.negatives, window=args.window)
    losses, wps = train(ids, len(vocab), noise, tables, rng, steps=args.steps,
                        report_every=max(1, args.steps // 10), label="fastembed_ext", **common)
    digest = table_digest(tables)
    w = tables.full("in")
    if not first:
        return losses, wps, None
    print(f"loss: {losses[0]:.4f} -> {losses[-1]:.4f}")
    print(f"table digest: {digest}")
    wps_numpy = None
    numpy_steps = max(1, args.steps // 10) if args.numpy_steps is None else args.numpy_steps
    if tables.world_size > 1:
        print(f"throughput: {wps:,.0f} words/s on {tables.world_size} ranks")
    elif numpy_steps:
        rng = np.random.default_rng(args.seed)
        slow = LocalTables(*initial_tables(rng, len(vocab), args.dim), args.lr, backend="numpy")
        _, wps_numpy = train(ids, len(vocab), noise, slow, rng, steps=numpy_steps, **common)
        print(f"throughput: {wps:,.0f} words/s with the compiled backend, "
              f"{wps_numpy:,.0f} words/s with the NumPy backend ({wps / wps_numpy:.1f}x)")
    else:
        print(f"throughput: {wps:,.0f} words/s with the compiled backend")
    for word in ("file", "list", "thread", "error", "string", "socket"):
        near = nearest(w, vocab, word)
        if near:
            print(f"  {word:>8}: {', '.join(near)}")
    return losses, wps, wps_numpy


def _rank_main(rank, args, world_size, port):
    """One rank of a group started on this machine."""
    import datetime

    import torch.distributed as dist
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")   # 127.0.0.1 only
    timeout = datetime.timedelta(seconds=120)
    store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False, timeout=timeout)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                            timeout=timeout)
    try:
        run(args, lambda w_in, w_out: ShardedTables(w_in, w_out, args.lr))
    finally:
        dist.destroy_process_group()


def main(argv=None):
    args = parse_args(argv)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        # started by torchrun: one rank of its group, whatever --world-size says
        import datetime

        import torch.distributed as dist
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
        try:
            return run(args, lambda w_in, w_out: ShardedTables(w_in, w_out, args.lr))
        finally:
            dist.destroy_process_group()
    if args.world_size <= 1:
        return run(args, lambda w_in, w_out: LocalTables(w_in, w_out, args.lr))
    import datetime

    import torch.distributed as dist
    import torch.multiprocessing as mp
    # the ranks meet at a store this process serves on 127.0.0.1 (a free port)
    store = dist.TCPStore("127.0.0.1", 0, args.world_size, is_master=True,
                          wait_for_workers=False, timeout=datetime.timedelta(seconds=120))
    mp.start_processes(_rank_main, args=(args, args.world_size, store.port),
                       nprocs=args.world_size, start_method="spawn")
    return None


if __name__ == "__main__":
    main()
