"""The process: the compiled extension, the environment, the fork guard, the
thread count, the backend, and ``info()``.

Nothing else in the package holds process state.  The environment is read
once, at import; a bad value is kept as an error that the calls it affects
raise (``info()`` lists it), never an import-time failure or warning.

The default thread count lives in the extension itself (one engine decides
threads), so that the lean entry points read it without a Python lookup;
this module only sets it.  ``lean_kernels`` is the extension when its lean
entry points may serve ``backend="auto"`` calls, else None.
"""

from __future__ import annotations

import importlib
import numbers
import os
from typing import Any

import numpy as np

from ._version import __version__

ENV_BACKEND = "FASTEMBED_EXT_BACKEND"
ENV_NUM_THREADS = "FASTEMBED_EXT_NUM_THREADS"
ENV_THREADS_AFTER_FORK = "FASTEMBED_EXT_THREADS_AFTER_FORK"
BACKENDS = ("auto", "cython", "numpy")
# More threads than this is a mistake, not a setting: the OpenMP runtime would
# try to start them all, and cannot report a failure other than by aborting.
MAX_THREADS = 256
# What the kernels take; _checks holds the rules that enforce it.
VALUE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
INDEX_DTYPES_ZERO_COPY = (np.dtype(np.int32), np.dtype(np.int64))


class BackendUnavailableError(ImportError):
    """``backend="cython"`` was asked for, but the compiled extension did not import."""


def _load_kernels() -> tuple[Any, str | None]:
    try:
        loaded = importlib.import_module(f"{__package__}._kernels")
    except ImportError as exc:  # reported by info(), never at import
        return None, f"{type(exc).__name__}: {exc}"
    return loaded, None


kernels, kernels_error = _load_kernels()


def unavailable_message() -> str:
    """Why the compiled extension cannot be used (one wording for the CLI and errors)."""
    return f"the compiled extension is not available: {kernels_error}"


# --------------------------------------------------------------------------
# the environment, read once

def _threads_from_env() -> tuple[int | None, str | None]:
    raw = os.environ.get(ENV_NUM_THREADS)
    if raw is None or raw.strip() == "":
        return None, None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_THREADS:
        return None, f"{ENV_NUM_THREADS} must be an integer from 1 to {MAX_THREADS}, got {raw!r}"
    return n, None


def _backend_from_env() -> tuple[str | None, str | None]:
    raw = os.environ.get(ENV_BACKEND)
    if raw is None or raw.strip() == "":
        return None, None
    value = raw.strip().lower()
    if value not in ("cython", "numpy"):
        return None, f"{ENV_BACKEND} must be 'cython' or 'numpy', got {raw!r}"
    return value, None


# None: follow OpenMP's default at each call (OMP_NUM_THREADS, threadpoolctl);
# an int: set by set_num_threads() or FASTEMBED_EXT_NUM_THREADS.
default_threads, threads_error = _threads_from_env()
forced_backend, backend_error = _backend_from_env()
lean_kernels: Any = None
# libgomp is not fork-safe: a child forked after the parent ran a parallel
# region hangs in its first one.  Such a child runs every call on its own
# thread, unless FASTEMBED_EXT_THREADS_AFTER_FORK=1 says the runtime in use
# copes (LLVM's libomp does).
forked_serial = False


def _sync_kernels() -> None:
    """Tell the extension the default thread count, and decide whether the lean
    entry points may serve ``backend="auto"`` calls (not when the environment
    forces NumPy or holds a bad value: the full path must raise it)."""
    global lean_kernels
    lean = (forced_backend in (None, "cython") and backend_error is None
            and threads_error is None)
    lean_kernels = kernels if lean else None
    if kernels is not None:
        kernels.configure(default_threads or 0)


def _after_fork_in_child() -> None:
    global forked_serial, default_threads
    if kernels is not None and kernels.pool_started() \
            and os.environ.get(ENV_THREADS_AFTER_FORK, "0") != "1":
        forked_serial = True
        default_threads = 1
        _sync_kernels()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
_sync_kernels()


# --------------------------------------------------------------------------
# threads

def check_num_threads(n: Any, name: str = "num_threads") -> int:
    allowed = "a positive integer or None" if name == "num_threads" else "a positive integer"
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be {allowed}, got {n!r} ({type(n).__name__})")
    count = int(n)
    if count < 1:
        raise ValueError(f"{name} must be >= 1, got {count}")
    if count > MAX_THREADS:
        raise ValueError(f"{name} must be <= {MAX_THREADS}, got {count}")
    return count


def set_num_threads(n: int) -> None:
    """Set the library's default thread count (used when ``num_threads=None``).

    Parameters
    ----------
    n : int
        Number of threads, >= 1.  Calls on small batches stay on one thread
        whatever this says: threads start only where they pay.
    """
    global default_threads, threads_error
    n = check_num_threads(n, "n")
    default_threads = 1 if forked_serial else n
    threads_error = None  # an explicit choice replaces a bad environment value
    _sync_kernels()


def get_num_threads() -> int:
    """The library's default thread count.

    It is, in order: the last ``set_num_threads(n)``, the environment variable
    ``FASTEMBED_EXT_NUM_THREADS`` read at import, or OpenMP's current default
    (which honours ``OMP_NUM_THREADS`` and ``threadpoolctl`` limits), or 1 in
    a build without OpenMP or without the compiled extension.
    """
    if threads_error is not None:
        raise ValueError(threads_error)
    if default_threads is not None:
        return int(default_threads)
    return int(kernels.omp_max_threads()) if kernels is not None else 1


def resolve_threads(num_threads: Any) -> int:
    """The thread count a kernel receives: 0 means the library default."""
    if num_threads is None:
        if threads_error is not None:
            raise ValueError(threads_error)
        return 0
    num_threads = check_num_threads(num_threads)
    return 1 if forked_serial else num_threads


def resolve_backend(backend: Any) -> str:
    """``"cython"`` or ``"numpy"``: what this call runs on."""
    if backend == "auto" and isinstance(backend, str):
        if backend_error is not None:
            raise ValueError(backend_error)
        backend = forced_backend or ("cython" if kernels is not None else "numpy")
    if backend == "cython" and isinstance(backend, str):
        if kernels is None:
            raise BackendUnavailableError(
                f"backend='cython' was requested but {unavailable_message()}; "
                f"use backend='numpy' or reinstall fastembed_ext")
        return "cython"
    if backend == "numpy" and isinstance(backend, str):
        return "numpy"
    raise ValueError(f"backend must be one of 'auto', 'cython', 'numpy', got {backend!r}")


# --------------------------------------------------------------------------
# info

def _openmp_runtime() -> str | None:
    """The OpenMP library this process has loaded for the kernels (as threadpoolctl sees it)."""
    if kernels is None or not kernels.build_info()["openmp"]:
        return None
    try:
        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1] for line in maps if "omp" in line.rsplit("/", 1)[-1]}
    except OSError:
        return "unknown"
    return ", ".join(sorted(libs)) or "unknown"


def info() -> dict[str, Any]:
    """What is installed and active, and why.

    Returns
    -------
    dict
        ``version``, ``backend`` (what ``backend="auto"`` resolves to),
        ``compiled`` (bool) and ``compiled_error`` (why not), ``forced_backend``
        (from ``FASTEMBED_EXT_BACKEND``), ``openmp``, ``num_threads``,
        ``value_dtypes``, ``index_dtypes``, ``cpu`` features, ``float16_path``
        and ``build`` (the compile flags that matter for the numerics).
    """
    compiled = kernels is not None
    build = kernels.build_info() if compiled else {}
    try:
        auto = resolve_backend("auto")
    except (ValueError, ImportError) as exc:
        auto = f"error: {exc}"
    return {
        "version": __version__,
        "backend": auto,
        "compiled": compiled,
        "compiled_error": kernels_error,
        "forced_backend": forced_backend,
        "env_errors": [e for e in (backend_error, threads_error) if e],
        "openmp": bool(build.get("openmp", False)),
        "num_threads": get_num_threads() if threads_error is None else None,
        "num_threads_source": ("set_num_threads / FASTEMBED_EXT_NUM_THREADS"
                               if default_threads is not None else "OpenMP default"),
        "openmp_runtime": _openmp_runtime(),
        "serial_after_fork": forked_serial,
        "value_dtypes": [str(t) for t in VALUE_DTYPES],
        "optional_value_dtypes": ["bfloat16 (with ml_dtypes installed)"],
        "index_dtypes": "int32 and int64 used as they are; other integer dtypes converted",
        "cpu": kernels.cpu_features() if compiled else {},
        "float16_path": ("f16c" if compiled and kernels.f16c_active() else "portable"),
        "build": build,
        "numpy": np.__version__,
    }
