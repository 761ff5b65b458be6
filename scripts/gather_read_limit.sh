#!/usr/bin/env bash
# How much room the gather has over NumPy on this machine, at the gather shapes
# of bench/test_gather.py (B=65536 uniform int64 ids, float32), one thread, in
# one run.  For each (T, d):
#   - the row-read limit (bench/native/row_read_limit.c with one row per
#     "bag": read every cache line of every looked-up row and nothing else,
#     best prefetch distance): no gather can finish sooner, even one whose
#     output cost nothing to write;
#   - the output alone: out[...] = 0, the B x d result written once;
#   - fastembed_ext.gather(out=) and the fastest NumPy spelling
#     (np.take(out=, mode="clip") or W[idx]), timed interleaved, medians of 21.
# It prints the ratios NumPy / fastembed_ext and NumPy / read limit: the
# second is the most any gather could gain over NumPy here.
#
#   scripts/gather_read_limit.sh     # the active python3 (PYTHON=...) needs fastembed_ext
#   SHAPES="T,d ..." scripts/gather_read_limit.sh
#
# Run it on a quiet machine; it takes about two minutes and 3 GB.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
fe_init gather_read_limit
"$PY" -c "import fastembed_ext" 2>/dev/null || fe_die "needs fastembed_ext in $PY"
cc -O2 -o "$WORK/row_read_limit" "$ROOT/bench/native/row_read_limit.c"

B=65536
SHAPES="${SHAPES:-200000,64 200000,128 200000,384 200000,768 1000000,64 1000000,128 1000000,384 1000000,768}"
for shape in $SHAPES; do
    IFS=, read -r T d <<<"$shape"
    limit_line="$("$WORK/row_read_limit" "$T" "$d" 1 "$B")"
    limit_ms="$(grep -oE 'D[0-9]+ [0-9.]+' <<<"$limit_line" | awk '{print $2}' | sort -g | head -n 1)"
    "$PY" - "$T" "$d" "$B" "$limit_ms" <<'PYEOF'
import sys
import time

import numpy as np

import fastembed_ext as fe

T, d, B = map(int, sys.argv[1:4])
limit_ms = float(sys.argv[4])
rng = np.random.default_rng(0)
w = rng.random((T, d), dtype=np.float32)
idx = rng.integers(0, T, B)
out = np.empty((B, d), np.float32)
calls = {
    "fastembed_ext": lambda: fe.gather(w, idx, out=out, num_threads=1),
    "take-clip": lambda: np.take(w, idx, axis=0, out=out, mode="clip"),
    "fancy": lambda: w[idx],
    "write": lambda: out.fill(0),
}
times = {k: [] for k in calls}
for f in calls.values():
    f()
for _ in range(21):
    for k, f in calls.items():
        t0 = time.perf_counter()
        f()
        times[k].append(time.perf_counter() - t0)
ms = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
numpy_ms = min(ms["take-clip"], ms["fancy"])
print(f"T={T} d={d} B={B}: read limit {limit_ms:.2f} ms, output write {ms['write']:.2f} ms, "
      f"fastembed_ext {ms['fastembed_ext']:.2f} ms, NumPy {numpy_ms:.2f} ms | "
      f"NumPy/fastembed_ext {numpy_ms / ms['fastembed_ext']:.2f}x, "
      f"NumPy/read limit {numpy_ms / limit_ms:.2f}x")
PYEOF
done
