#!/usr/bin/env bash
# How close the bag-sum kernel runs to the machine's limit, at the bag shapes
# of bench/test_layers.py, in one run: the row-read limit
# (bench/native/row_read_limit.c: read every cache line of every looked-up
# row and nothing else, best prefetch distance), fastembed_ext.embedding_bag
# and torch's embedding_bag (FBGEMM's kernel), both sum mode, one thread,
# timed interleaved (medians of 31).  Prints each time and the ratios
# torch / fastembed_ext and torch / limit: the second is the most any kernel
# could gain over torch here.
#
#   scripts/bag_read_limit.sh       # the active python3 (PYTHON=...) needs fastembed_ext and torch
#   SHAPES="T,d,L,B ..." scripts/bag_read_limit.sh
#
# Run it on a quiet machine; it takes about two minutes and 1.5 GB.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
fe_init bag_read_limit
"$PY" -c "import fastembed_ext, torch" 2>/dev/null || fe_die "needs fastembed_ext and torch in $PY"
cc -O2 -o "$WORK/row_read_limit" "$ROOT/bench/native/row_read_limit.c"

SHAPES="${SHAPES:-1000000,64,20,16384 100000,128,100,4096 1000000,256,4,16384}"
for shape in $SHAPES; do
    IFS=, read -r T d L B <<<"$shape"
    limit_line="$("$WORK/row_read_limit" "$T" "$d" "$L" "$B")"
    echo "$limit_line"
    # the best prefetch distance's median
    limit_ms="$(grep -oE 'D[0-9]+ [0-9.]+' <<<"$limit_line" | awk '{print $2}' | sort -g | head -n 1)"
    "$PY" - "$T" "$d" "$L" "$B" "$limit_ms" <<'PYEOF'
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import fastembed_ext as fe

T, d, L, B = map(int, sys.argv[1:5])
limit_ms = float(sys.argv[5])
torch.set_num_threads(1)
rng = np.random.default_rng(0)
w = rng.random((T, d), dtype=np.float32)
idx = rng.integers(0, T, B * L)
offsets = np.arange(B, dtype=np.int64) * L
wt, it, ot = torch.from_numpy(w), torch.from_numpy(idx), torch.from_numpy(offsets)
ours = lambda: fe.embedding_bag(w, idx, offsets, mode="sum", num_threads=1)
theirs = lambda: F.embedding_bag(it, wt, ot, mode="sum")
ours(); theirs()
a, b = [], []
for _ in range(31):
    t0 = time.perf_counter(); ours(); t1 = time.perf_counter(); theirs(); t2 = time.perf_counter()
    a.append(t1 - t0); b.append(t2 - t1)
fe_ms, torch_ms = np.median(a) * 1e3, np.median(b) * 1e3
print(f"T={T} d={d} L={L} B={B}: limit {limit_ms:.2f} ms, fastembed_ext {fe_ms:.2f} ms, "
      f"torch {torch_ms:.2f} ms | torch/fastembed_ext {torch_ms / fe_ms:.2f}x, "
      f"torch/limit {torch_ms / limit_ms:.2f}x, fastembed_ext/limit {fe_ms / limit_ms:.2f}")
PYEOF
done
