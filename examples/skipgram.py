"""Skip-gram word vectors with negative sampling, NumPy + fastembed_ext only.

The corpus is the docstrings of the Python standard library installed next to
this interpreter (read with ``ast``, nothing imported), so it runs on any
machine with Python.  Each step gathers the centre and context rows, computes
the negative-sampling loss and its gradients with NumPy, and applies sparse
SGD to both tables with ``fastembed_ext.sgd_step`` (which coalesces repeated
rows first).  It prints the loss falling, words per second for the compiled
and the NumPy backends, and the nearest neighbours of a few words.

    python examples/skipgram.py                 # a few minutes
    python examples/skipgram.py --steps 300     # a quick look
"""

from __future__ import annotations

import argparse
import ast
import collections
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


def train(ids, vocab_size, noise, *, dim, steps, batch, negatives, window, lr, backend, seed,
          report_every=0, label=""):
    rng = np.random.default_rng(seed)
    w_in = ((rng.random((vocab_size, dim), dtype=np.float32) - 0.5) / dim).astype(np.float32)
    w_out = np.zeros((vocab_size, dim), np.float32)
    losses = []
    window_losses = []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        centre, context = training_pairs(rng, ids, batch, window)
        neg = rng.choice(vocab_size, size=(batch, negatives), p=noise)
        h = fe.gather(w_in, centre, backend=backend)                      # (B, d)
        u_pos = fe.gather(w_out, context, backend=backend)                # (B, d)
        u_neg = fe.gather(w_out, neg, backend=backend)                    # (B, K, d)
        s_pos = np.einsum("bd,bd->b", h, u_pos)
        s_neg = np.einsum("bd,bkd->bk", h, u_neg)
        loss = -np.log(sigmoid(s_pos) + 1e-7).mean() - np.log(sigmoid(-s_neg) + 1e-7).sum(1).mean()
        g_pos = (sigmoid(s_pos) - 1.0).astype(np.float32)                 # d loss / d s_pos
        g_neg = sigmoid(s_neg).astype(np.float32)
        d_h = g_pos[:, None] * u_pos + np.einsum("bk,bkd->bd", g_neg, u_neg)
        d_out = np.concatenate([g_pos[:, None] * h, (g_neg[:, :, None] * h[:, None, :]).reshape(-1, dim)])
        rows_out = np.concatenate([context, neg.reshape(-1)])
        fe.sgd_step(w_in, centre, d_h.astype(np.float32), lr=lr, backend=backend)
        fe.sgd_step(w_out, rows_out, d_out.astype(np.float32), lr=lr, backend=backend)
        window_losses.append(float(loss))
        if report_every and step % report_every == 0:
            losses.append(float(np.mean(window_losses)))
            window_losses = []
            print(f"  {label} step {step:>6}: loss {losses[-1]:.4f}", flush=True)
    elapsed = time.perf_counter() - t0
    if window_losses:
        losses.append(float(np.mean(window_losses)))
    words_per_s = steps * batch / elapsed
    return w_in, losses, words_per_s


def nearest(w, vocab, word, k=5):
    if word not in vocab:
        return []
    x = w / (np.linalg.norm(w, axis=1, keepdims=True) + 1e-9)
    i = vocab.index(word)
    sims = x @ x[i]
    sims[i] = -np.inf
    return [vocab[j] for j in np.argsort(-sims)[:k]]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--negatives", type=int, default=5)
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.025)
    p.add_argument("--files", type=int, default=None, help="read only this many stdlib files")
    p.add_argument("--numpy-steps", type=int, default=None,
                   help="steps for the NumPy-backend timing run (default: steps // 10)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    texts = stdlib_docstrings(args.files)
    vocab, ids, freq = build_corpus(texts)
    noise = freq ** 0.75
    noise /= noise.sum()
    print(f"corpus: {len(texts)} stdlib docstrings, {ids.shape[0]} words, vocabulary {len(vocab)}")
    common = dict(dim=args.dim, batch=args.batch, negatives=args.negatives, window=args.window,
                  lr=args.lr, seed=args.seed)
    w, losses, wps_fast = train(ids, len(vocab), noise, steps=args.steps, backend="auto",
                                report_every=max(1, args.steps // 10), label="fastembed_ext",
                                **common)
    numpy_steps = args.numpy_steps or max(1, args.steps // 10)
    _, _, wps_numpy = train(ids, len(vocab), noise, steps=numpy_steps, backend="numpy", **common)
    print(f"loss: {losses[0]:.4f} -> {losses[-1]:.4f}")
    print(f"throughput: {wps_fast:,.0f} words/s with the compiled backend, "
          f"{wps_numpy:,.0f} words/s with the NumPy backend ({wps_fast / wps_numpy:.1f}x)")
    for word in ("file", "list", "thread", "error", "string", "socket"):
        near = nearest(w, vocab, word)
        if near:
            print(f"  {word:>8}: {', '.join(near)}")
    return losses, wps_fast, wps_numpy


if __name__ == "__main__":
    main()
