#!/usr/bin/env bash
# The wheel is compiled against NumPy 2.x headers but claims numpy>=1.25 at run
# time.  Install the cp311 wheel from wheelhouse/ (scripts/build_wheels.sh
# makes it) into a fresh venv per NumPy version, oldest first, and run the
# bit-for-bit CLI check and the test suite against each.  Prints a table and
# keeps each run's log in wheelhouse/logs/oldest_numpy/numpy-<version>.log
# (written in a temporary directory, published when the script ends).
#
#   bash scripts/oldest_numpy.sh [WHEEL]
#
# Environment:
#   NUMPY_VERSIONS="1.25.2 1.26.4 2.0.2 2.1.3 latest"   versions to try, oldest
#                first (default shown; "latest" = unpinned, the control run)
#   TORCH_WHEELS=/opt/wheels   where a local torch CPU wheel for this Python may
#                lie; if one does, it is installed too so the DLPack/torch tests
#                run (as .ci/run does); TORCH_WHEELS= to skip
#   PYTHON=/path/to/python3.11   interpreter (default: the newest pyenv 3.11.x)
#   PYTEST_ARGS="..."            extra pytest arguments
#   TEST_VMEM_GB=16              address-space cap (ulimit -v) per test process; 0 = none
#   KEEP_WORK=1                  keep the temporary venvs
# Exits non-zero if the oldest version the package claims (the first one) fails.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
OUT="${WHEELHOUSE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/wheelhouse}"
fe_init oldest_numpy "$OUT/logs/oldest_numpy"
HELPERS="$ROOT/scripts/wheels"
LOGS_OUT="$OUT/logs/oldest_numpy"

read -r -a VERSIONS <<<"${NUMPY_VERSIONS:-1.25.2 1.26.4 2.0.2 2.1.3 latest}"
PYTHON="${PYTHON:-$(fe_python 11)}"
[ -n "$PYTHON" ] && [ -x "$PYTHON" ] || fe_die "no Python 3.11 found (set PYTHON)"
tag="$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"

WHEEL="${1:-}"
if [ -z "$WHEEL" ]; then
    WHEEL="$(ls -t "$OUT"/fastembed_ext-*-"$tag"-"$tag"-manylinux*.whl 2>/dev/null | head -n 1 || true)"
fi
[ -n "$WHEEL" ] && [ -f "$WHEEL" ] \
    || fe_die "no $tag wheel in $OUT: run scripts/build_wheels.sh first, or pass a wheel"
WHEEL="$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")"
# The tests that go with the wheel: those of the sdist build_wheels.sh made in
# the same run (same snapshot as the wheel), else a copy of the checkout's.
version="$(basename "$WHEEL" | cut -d- -f2)"
SDIST="$(dirname "$WHEEL")/fastembed_ext-$version.tar.gz"
if [ -f "$SDIST" ]; then
    mkdir -p "$WORK/sdist"
    tar -C "$WORK/sdist" -xzf "$SDIST"
    SNAP="$WORK/sdist/fastembed_ext-$version"
    TESTS_FROM="$(basename "$SDIST")"
else
    SNAP="$WORK/src"
    mkdir -p "$SNAP"
    cp -r "$ROOT/tests" "$ROOT/pyproject.toml" "$SNAP/"
    [ -d "$ROOT/examples" ] && cp -r "$ROOT/examples" "$SNAP/"
    find "$SNAP" -name __pycache__ -prune -exec rm -rf {} +
    TESTS_FROM="$ROOT/tests (no sdist beside the wheel: may not match the wheel)"
fi
[ -f "$SNAP/tests/conftest.py" ] || fe_die "no tests/ in $SNAP"

echo "wheel:   $(basename "$WHEEL")"
echo "python:  $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')  ($PYTHON)"
TORCH="$(fe_local_torch "$tag")"
echo "tests:   $TESTS_FROM"
echo "torch:   ${TORCH:-none (its DLPack/interop tests will skip)}"
echo "numpy:   ${VERSIONS[*]}"

declare -A RESULT
FIRST_OK=""
LATEST=""
OLDEST_FAILED=0
for v in "${VERSIONS[@]}"; do
    log="$LOGS/numpy-$v.log"
    venv="$WORK/venv-numpy-$v"
    run="$WORK/run-$v"
    t=$SECONDS
    echo
    echo "== numpy $v"
    {
        "$PYTHON" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --upgrade pip
    } >"$log" 2>&1
    # numpy pinned in the same resolve as the wheel and its test extra
    if [ "$v" = latest ]; then pin="numpy"; else pin="numpy==$v"; fi
    if ! "$venv/bin/python" -m pip install --only-binary numpy "$pin" "$WHEEL[test]" ${TORCH:+"$TORCH"} \
            >>"$log" 2>&1; then
        RESULT[$v]="install failed (see $LOGS_OUT/$(basename "$log"))"
        echo "  ${RESULT[$v]}"
        [ "$v" = "${VERSIONS[0]}" ] && OLDEST_FAILED=1
        continue
    fi
    got="$("$venv/bin/python" -c 'import numpy; print(numpy.__version__)')"
    [ "$got" = "$v" ] || [ "$v" = latest ] || fe_die "asked for numpy $v, got $got"
    if [ "$v" = latest ]; then LATEST="$got"; echo "  (latest = numpy $got)"; fi
    mkdir -p "$run"
    status=ok
    notes=()
    if ! facts="$(cd "$run" && "$venv/bin/python" "$HELPERS/check_installed.py" "$ROOT" 2>&1)"; then
        status=failed; notes+=("install check failed")
    fi
    echo "  $facts"
    printf '\n$ check_installed.py\n%s\n' "$facts" >>"$log"
    # the CLI's wide bit-for-bit sweep, then the main job (BERT-sized, exits non-zero on a mismatch)
    for cmd in "check" ""; do
        printf '\n$ python -m fastembed_ext %s\n' "$cmd" >>"$log"
        # shellcheck disable=SC2086
        if ! (fe_cap_memory; cd "$run" && "$venv/bin/python" -m fastembed_ext $cmd) >>"$log" 2>&1; then
            status=failed; notes+=("python -m fastembed_ext ${cmd:-(main job)} failed")
        fi
    done
    printf '\n$ python -m pytest -p no:cacheprovider tests -q -rfE %s\n' "${PYTEST_ARGS:-}" >>"$log"
    rc=0
    # shellcheck disable=SC2086
    (fe_cap_memory; cd "$run" && "$venv/bin/python" -m pytest -p no:cacheprovider "$SNAP/tests" -q -rfE ${PYTEST_ARGS:-}) \
        >>"$log" 2>&1 || rc=$?
    last="$(grep -E '(passed|failed|error|no tests ran)' "$log" | tail -n 1 || true)"
    if [ "$rc" -ne 0 ]; then
        status=failed
        [ "$rc" -eq 5 ] && last="pytest collected no tests"
        notes+=("pytest exit $rc: $last")
        grep -E '^(FAILED|ERROR) ' "$log" | sed 's/^/  /' | head -n 25 || true
    else
        notes+=("pytest: $last")
    fi
    RESULT[$v]="$status; $(IFS=';'; echo "${notes[*]}")  ($((SECONDS - t)) s)"
    echo "  ${RESULT[$v]}"
    if [ "$status" = ok ]; then
        [ -z "$FIRST_OK" ] && FIRST_OK="$v"
    elif [ "$v" = "${VERSIONS[0]}" ]; then
        OLDEST_FAILED=1
    fi
done

echo
echo "== summary: $(basename "$WHEEL") on Python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
for v in "${VERSIONS[@]}"; do
    label="$v"; [ "$v" = latest ] && label="${LATEST:-latest}"
    printf '  numpy %-8s %s\n' "$label" "${RESULT[$v]}"
done
claim="$("$PYTHON" -c 'import sys, tomllib; d = tomllib.load(open(sys.argv[1], "rb"))
print(" ".join(r for r in d["project"]["dependencies"] if r.startswith("numpy")))' "$ROOT/pyproject.toml")"
echo "  lowest passing version tried: ${FIRST_OK:-none}   (pyproject claims $claim)"
echo "  total $(fe_elapsed) s"
[ "$OLDEST_FAILED" -eq 0 ] || fe_die "the oldest NumPy tried (${VERSIONS[0]}) fails"
