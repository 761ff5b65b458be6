#!/usr/bin/env bash
# The drop-in on a real library: HIPS autograd, whose VJP of indexing
# (autograd/numpy/numpy_vjps.py, `untake`) calls `onp.add.at(A, idx, x)`.
#
# Into a fresh virtual environment: this checkout (built from a copy), the
# NumPy of the calling interpreter, pytest, and autograd from the package
# index; then autograd's own test suite (the tests of its sdist) is run three
# times: stock; with every autograd module that binds numpy patched by
# fastembed_ext.patch; and patched with the size thresholds at 0 (autograd's
# tests use small arrays, which the default thresholds leave to NumPy) and
# every add_at/take call checked bit for bit against NumPy on a copy.  The
# runs' pass/skip/fail counts are printed with patch_stats() of both patched
# runs.  Last, the gradient of sum(W[ids] * G)
# through autograd.grad is timed stock and patched in one process (medians,
# the same inputs, results compared bit for bit).
#
#   scripts/dropin_autograd.sh
#
# Environment:
#   AUTOGRAD_VERSION=1.9.1   the autograd release (sdist and install)
#   PYTHON=python3           interpreter for the venv (its numpy version is pinned)
#   KEEP_WORK=1              keep the temporary directory
# Needs the network (the package index) and a C compiler; about 3 minutes on
# 2 cores (build ~1.5 min, each suite run 15-40 s, the timings ~30 s).  Not
# part of .ci/run.  Exits non-zero if the build or a step fails, if the runs'
# counts differ, or if a checked call differs from NumPy.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
fe_init dropin_autograd
VERSION="${AUTOGRAD_VERSION:-1.9.1}"

fe_say "fresh venv: this checkout, NumPy, pytest, autograd $VERSION"
fe_copy_checkout "$WORK/src"
fe_fresh_venv "$PY" "$WORK/venv"
VPY="$WORK/venv/bin/python"
NUMPY_PIN="$(fe_pins numpy)"
fe_logged "$LOGS/deps.log" "$VPY" -m pip install "Cython>=3.1" "setuptools>=68" wheel pytest \
    "${NUMPY_PIN:-numpy}"
(cd "$WORK/src" && fe_logged "$LOGS/build.log" "$VPY" -m pip install --no-build-isolation --no-deps .)
fe_logged "$LOGS/autograd.log" "$VPY" -m pip download --no-deps --no-binary :all: \
    "autograd==$VERSION" -d "$WORK/dl"
tar -C "$WORK/dl" -xzf "$WORK/dl/autograd-$VERSION.tar.gz"
fe_logged "$LOGS/autograd-install.log" "$VPY" -m pip install --no-deps "$WORK/dl/autograd-$VERSION"
# only the tests, away from the source tree, so that `import autograd` is the installed one
cp -r "$WORK/dl/autograd-$VERSION/tests" "$WORK/tests"
"$VPY" -c "import numpy, autograd, fastembed_ext; print('numpy', numpy.__version__, \
'| autograd', '$VERSION', '| fastembed_ext', fastembed_ext.__version__)"

# autograd's pytest settings ask for pytest-cov and xdist; an empty ini file
# runs its tests in one process without them
: >"$WORK/pytest.ini"
cat >"$WORK/fe_patch_plugin.py" <<'EOF'
"""Patch every autograd module that binds numpy, before any test runs.

FE_CHECKED=1: also send every row form to the kernels, however small (the
size thresholds at 0; autograd's tests use small arrays, which the default
thresholds leave to NumPy), and run every call a second time on a copy
through NumPy itself, comparing result bits (or the exception type).
"""
import json
import os
import sys
import warnings

import numpy as np

import autograd
import autograd.numpy
import autograd.numpy.random
import fastembed_ext as fe
from fastembed_ext import _dropin

PATCHED = []
CHECKED = {"calls": 0, "mismatches": 0, "first_mismatch": None}


def _same(x, y):
    return (type(x) is type(y) and getattr(x, "dtype", None) == getattr(y, "dtype", None)
            and np.shape(x) == np.shape(y) and np.asarray(x).tobytes() == np.asarray(y).tobytes())


def _check(name, reference, call):
    """reference() runs first (on copies, its warnings silenced, the caller's
    np.errstate kept so that an error state raises in both); then the real call."""
    CHECKED["calls"] += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want, want_exc = reference(), None
    except Exception as e:  # noqa: BLE001
        want, want_exc = None, type(e)
    try:
        got = call()
    except Exception as e:
        if type(e) is not want_exc:
            _mismatch(name, f"raised {type(e).__name__}, NumPy {want_exc}")
        raise
    if want_exc is not None:
        _mismatch(name, f"returned, NumPy raised {want_exc.__name__}")
    elif not _same(got, want):
        _mismatch(name, "result bits differ")
    return got


def _mismatch(name, what):
    CHECKED["mismatches"] += 1
    CHECKED["first_mismatch"] = CHECKED["first_mismatch"] or f"{name}: {what}"


def _checked_add_at(a, indices, b=_dropin._NOVALUE, /):
    if type(a) is not np.ndarray:
        return add_at(a, indices, b)
    ref = a.copy()
    rb = b.copy() if type(b) is np.ndarray else b  # b may be a view of a
    args = (indices,) if b is _dropin._NOVALUE else (indices, rb)

    def reference():
        np.add.at(ref, *args)
        return ref

    def call():
        add_at(a, indices, b)
        return a

    _check("add_at", reference, call)


def _checked_take(a, indices, axis=None, out=None, mode="raise"):
    ref_out = out.copy() if type(out) is np.ndarray else out
    return _check("take", lambda: np.take(a, indices, axis=axis, out=ref_out, mode=mode),
                  lambda: take(a, indices, axis=axis, out=out, mode=mode))


add_at, take = _dropin.add_at, _dropin.take


def pytest_configure(config):
    if os.environ.get("FE_CHECKED") == "1":
        _dropin.SMALL_ADD_AT = _dropin.SMALL_TAKE = _dropin.NARROW_TAKE = 0
        _dropin.add_at = _checked_add_at  # what the patched np.add.at calls
        vars(_dropin._NUMPY)["take"] = _checked_take  # the patched np.take
    for name in sorted(n for n in sys.modules if n == "autograd" or n.startswith("autograd.")):
        try:
            if fe.patch(name):
                PATCHED.append(name)
        except ValueError:  # binds no numpy global
            pass
    fe.patch_stats(reset=True)


def pytest_unconfigure(config):
    with open(os.environ["FE_STATS_OUT"], "w") as f:
        json.dump({"patched_modules": PATCHED, "stats": fe.patch_stats(), "checked": CHECKED},
                  f, indent=1)
EOF

run_suite() {  # NAME [pytest args...]
    local name="$1"; shift
    local t0=$SECONDS rc=0
    (cd "$WORK" && "$VPY" -m pytest -c "$WORK/pytest.ini" --rootdir "$WORK" -p no:cacheprovider \
        -q -W "ignore::UserWarning" --junitxml="$LOGS/$name.xml" "$@" "$WORK/tests" \
        >"$LOGS/$name.log" 2>&1) || rc=$?
    tail -n 1 "$LOGS/$name.log"
    echo "$name: pytest exit $rc in $((SECONDS - t0)) s"
}

fe_say "autograd's test suite, stock"
run_suite stock
fe_say "autograd's test suite, patched by fastembed_ext.patch"
FE_STATS_OUT="$LOGS/patched.json" PYTHONPATH="$WORK" run_suite patched -p fe_patch_plugin
fe_say "autograd's test suite, patched, every row form on the kernels, each call checked against NumPy"
FE_CHECKED=1 FE_STATS_OUT="$LOGS/checked.json" PYTHONPATH="$WORK" run_suite checked -p fe_patch_plugin

fe_say "counts (from the JUnit XML of each run)"
"$VPY" - "$LOGS" <<'EOF'
import json
import sys
import xml.etree.ElementTree as ET

logs = sys.argv[1]
counts = {}
for name in ("stock", "patched", "checked"):
    root = ET.parse(f"{logs}/{name}.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    total, fail, err, skip = (int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped"))
    counts[name] = {"passed": total - fail - err - skip, "skipped": skip, "failed": fail,
                    "errors": err}
    print(f"{name:8s} " + "  ".join(f"{k} {v}" for k, v in counts[name].items()))
for name in ("patched", "checked"):
    report = json.load(open(f"{logs}/{name}.json"))
    print(f"{name}: patched modules:", ", ".join(report["patched_modules"]))
    for fn, s in report["stats"].items():
        print(f"  patch_stats {fn}: accelerated {s['accelerated']}, fallback {s['fallback']}")
        for reason, n in s["reasons"].items():
            print(f"    {n:6d}  {reason}")
checked = json.load(open(f"{logs}/checked.json"))["checked"]
print(f"checked: {checked['calls']} calls compared with NumPy, {checked['mismatches']} differ"
      + (f" (first: {checked['first_mismatch']})" if checked["mismatches"] else ""))
if not counts["stock"] == counts["patched"] == counts["checked"]:
    sys.exit("a patched run's counts differ from the stock run's")
if checked["mismatches"] or not checked["calls"]:
    sys.exit("the checked run saw a call that differs from NumPy, or no call at all")
EOF

fe_say "autograd's embedding gradient: grad of sum(W[ids] * G), stock and patched"
"$VPY" - <<'EOF'
import statistics
import time

import numpy as onp

import autograd
import autograd.numpy as anp
import fastembed_ext as fe
from fastembed_ext._workloads import zipf_ids

VJPS = "autograd.numpy.numpy_vjps"


def median_ms(fn, rounds):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


rng = onp.random.default_rng(0)
print(f"{'dtype':8s} {'T':>7s} {'d':>4s} {'B':>6s} {'threads':>7s} {'stock ms':>9s} "
      f"{'patched ms':>10s} {'speedup':>7s}  bits")
for dtype, T, d, B in [("float64", 30000, 64, 16384), ("float32", 30000, 64, 16384),
                       ("float64", 100000, 128, 8192), ("float64", 5000, 16, 16384)]:
    W = rng.standard_normal((T, d)).astype(dtype)
    ids = zipf_ids(rng, T, B)
    G = rng.standard_normal((B, d)).astype(dtype)
    grad = autograd.grad(lambda W: anp.sum(W[ids] * G))
    for threads in (1, fe.get_num_threads()):
        fe.set_num_threads(threads)
        fe.unpatch(VJPS)
        want = grad(W)
        stock = median_ms(lambda: grad(W), 7)
        with fe.patched(VJPS):
            got = grad(W)
            patched = median_ms(lambda: grad(W), 15)
        same = got.dtype == want.dtype and got.tobytes() == want.tobytes()
        print(f"{dtype:8s} {T:7d} {d:4d} {B:6d} {threads:7d} {stock:9.2f} {patched:10.2f} "
              f"{stock / patched:6.1f}x  {'identical' if same else 'DIFFER'}")
        assert same
print("patch_stats:", fe.patch_stats()["add_at"])
EOF
echo "== dropin_autograd: done in $(fe_elapsed) s"
