# Shared by the scripts in this folder: `. "$(dirname "$0")/_lib.sh"; fe_init NAME`.
#
# fe_init NAME [LOGS_OUT]
#     ROOT (the checkout), PY (the calling interpreter, before any venv), WORK
#     (a fresh temporary directory), LOGS ($WORK/logs) and T0 (start time).
#     On exit WORK is removed (KEEP_WORK=1 keeps it) and, when LOGS_OUT is
#     given, LOGS is published there whole, by rename, so that a reader never
#     sees half a run's logs.
# fe_say TEXT / fe_die TEXT       a section header / an error that exits 1
# fe_logged LOG CMD...            run CMD with its output in LOG; on failure show the tail and die
# fe_copy_checkout DEST           the checkout's files without build products or .git
# fe_fresh_venv PYTHON DIR        a venv with an up-to-date pip (log beside it)
# fe_pins REGEX                   "name==version" of the calling interpreter's packages matching REGEX
# fe_cap_memory                   in a subshell: cap the address space (TEST_VMEM_GB, default 16; 0 = none)
# fe_local_torch TAG              a torch CPU wheel for cpXY on this disk (TORCH_WHEELS, default /opt/wheels)
# fe_python MINOR                 the newest pyenv 3.MINOR.x, else python3.MINOR on PATH
# fe_elapsed                      seconds since fe_init

fe_init() {
    FE_NAME="$1"
    FE_LOGS_OUT="${2:-}"
    ROOT="$(cd "$(dirname "${BASH_SOURCE[1]}")/.." && pwd)"
    PY="$(command -v "${PYTHON:-python3}")"
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/fastembed_ext-$FE_NAME.XXXXXX")"
    LOGS="$WORK/logs"
    mkdir -p "$LOGS"
    T0=$SECONDS
    trap fe_finish EXIT
}

fe_finish() {
    if [ -n "$FE_LOGS_OUT" ] && [ -d "$LOGS" ]; then
        { mkdir -p "$(dirname "$FE_LOGS_OUT")" && rm -rf "$FE_LOGS_OUT.new.$$" \
              && cp -r "$LOGS" "$FE_LOGS_OUT.new.$$" && rm -rf "$FE_LOGS_OUT" \
              && mv "$FE_LOGS_OUT.new.$$" "$FE_LOGS_OUT"; } || true
    fi
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "$FE_NAME: kept $WORK"; else rm -rf "$WORK"; fi
}

fe_say() { printf '\n== %s\n' "$*"; }
fe_die() { echo "$FE_NAME: $*" >&2; exit 1; }
fe_elapsed() { echo $((SECONDS - T0)); }

fe_logged() {
    local log="$1"; shift
    if ! "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        # where the log will be once published, when it is
        [ -n "$FE_LOGS_OUT" ] && log="${log/#"$LOGS"/$FE_LOGS_OUT}"
        fe_die "failed: $* (full log: $log)"
    fi
}

fe_copy_checkout() {
    mkdir -p "$1"
    tar -C "$ROOT" --exclude=./.git --exclude=./build --exclude=./dist --exclude=./wheelhouse \
        --exclude='*.so' --exclude='./src/fastembed_ext/_kernels.c' --exclude='*.egg-info' \
        --exclude=.hypothesis --exclude=__pycache__ --exclude='.venv*' -cf - . | tar -C "$1" -xf -
}

fe_fresh_venv() {
    "$1" -m venv "$2"
    fe_logged "$2.pip.log" "$2/bin/python" -m pip install --upgrade pip
}

fe_pins() {
    "$PY" -m pip list --format=freeze 2>/dev/null | grep -iE "^($1)==" || true
}

fe_cap_memory() {
    local gb="${TEST_VMEM_GB:-16}"
    [ "$gb" -gt 0 ] && ulimit -v $((gb * 1024 * 1024))
    return 0
}

fe_local_torch() {
    local dir="${TORCH_WHEELS-/opt/wheels}"
    [ -n "$dir" ] || return 0
    ls "$dir"/torch-*+cpu-"$1"-"$1"-*linux*_"$(uname -m)".whl 2>/dev/null | sort -V | tail -n 1 || true
}

fe_python() {
    local root="${PYENV_ROOT:-$HOME/.pyenv}" best
    # the newest 3.MINOR.y; free-threaded builds (3.13.0t) are not targets here
    best="$(ls -d "$root"/versions/3."$1".* 2>/dev/null \
            | grep -E "/3\.$1\.[0-9]+$" | sort -V | tail -n 1 || true)"
    if [ -n "$best" ] && [ -x "$best/bin/python3" ]; then
        echo "$best/bin/python3"
    elif command -v "python3.$1" >/dev/null 2>&1; then
        command -v "python3.$1"
    fi
}
