"""The process: the compiled extension, the environment, the thread count, the
backend, threadpoolctl, and ``info()``.

Nothing else in the package holds process state.  The environment is read
once, at import; a bad value is kept as an error that the calls it affects
raise (``info()`` lists it), never an import-time failure or warning.

The default thread count lives in the extension's engine (one engine decides
threads), so that the kernels and threadpoolctl read and set the same value;
this module resolves where it starts.  In order, each later one winning:

1. the CPUs this process may use: its affinity mask (``os.sched_getaffinity``)
   and its cgroup's CPU quota (a container limited to 2 CPUs on a 64-core host
   gets 2);
2. ``OMP_NUM_THREADS`` (its first entry), as OpenMP libraries read it;
3. ``FASTEMBED_EXT_NUM_THREADS``;
4. ``set_num_threads(n)``;
5. a ``threadpoolctl.threadpool_limits`` block, for as long as it lasts.

``lean_kernels`` is the extension when its lean entry points may serve
``backend="auto"`` calls, else None.
"""

from __future__ import annotations

import importlib
import math
import numbers
import os
from typing import Any

import numpy as np

from ._version import __version__

ENV_BACKEND = "FASTEMBED_EXT_BACKEND"
ENV_NUM_THREADS = "FASTEMBED_EXT_NUM_THREADS"
BACKENDS = ("auto", "cython", "numpy")
# More threads than this is a mistake, not a setting (the engine's limit).
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


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup",
                     proc_cgroup: str = "/proc/self/cgroup") -> float | None:
    """The CPUs this process's cgroup may use (quota / period), or None for no limit.

    cgroup v2 (``cpu.max``) and v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``),
    the smallest quota of the process's cgroup and its ancestors.
    """
    try:
        with open(proc_cgroup) as f:
            lines = [line.rstrip("\n").split(":", 2) for line in f if line.count(":") >= 2]
    except OSError:
        return None
    limits = []
    for _, controllers, path in lines:
        names = controllers.split(",") if controllers else []
        base: str | None
        if controllers == "":           # v2: the unified hierarchy
            base, read = root, _cpu_max
        elif "cpu" in names:            # v1: the cpu controller's own hierarchy
            base = next((os.path.join(root, d) for d in (controllers, "cpu", "cpu,cpuacct")
                         if os.path.isdir(os.path.join(root, d))), None)
            read = _cfs_quota
        else:
            continue
        if base is None:
            continue
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            limit = read(os.path.join(base, *parts[:depth]))
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def _cpu_max(directory: str) -> float | None:
    try:
        with open(os.path.join(directory, "cpu.max")) as f:
            quota, period = (f.read().split() + ["100000"])[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _cfs_quota(directory: str) -> float | None:
    try:
        with open(os.path.join(directory, "cpu.cfs_quota_us")) as f:
            quota = int(f.read())
        with open(os.path.join(directory, "cpu.cfs_period_us")) as f:
            period = int(f.read())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError, ZeroDivisionError):
        return None


def cpu_budget() -> tuple[int, dict[str, Any]]:
    """How many CPUs this process may use, and the facts it comes from."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        affinity = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    n = affinity if quota is None else max(1, min(affinity, math.ceil(quota)))
    return min(n, MAX_THREADS), {"affinity": affinity, "cgroup_quota": quota,
                                 "cpu_count": os.cpu_count()}


def _omp_num_threads() -> int | None:
    # OpenMP's rules: the first entry of a comma list; an invalid value is ignored
    raw = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        n = int(raw)
    except ValueError:
        return None
    return min(n, MAX_THREADS) if n >= 1 else None


def _start_threads() -> tuple[int, str]:
    """The default thread count at import, and the setting it comes from."""
    env, _ = _threads_from_env()
    if env is not None:
        return env, "FASTEMBED_EXT_NUM_THREADS"
    omp = _omp_num_threads()
    if omp is not None:
        return omp, "OMP_NUM_THREADS"
    return cpu_budget()[0], "cpus"


_, threads_error = _threads_from_env()
forced_backend, backend_error = _backend_from_env()
lean_kernels: Any = None


def _sync_kernels() -> None:
    """Decide whether the lean entry points may serve ``backend="auto"`` calls:
    not when the environment forces NumPy or holds a bad value (the full path
    must raise it)."""
    global lean_kernels
    lean = (forced_backend in (None, "cython") and backend_error is None
            and threads_error is None)
    lean_kernels = kernels if lean else None


if kernels is not None:
    kernels.set_cpu_budget(cpu_budget()[0])
    _n, _source = _start_threads()
    if not kernels.build_info()["parallel"] and _source == "cpus":
        _n = 1  # a serial build uses one thread unless told otherwise
    kernels.set_default_threads(_n, _source)
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
    global threads_error
    count = check_num_threads(n, "n")
    threads_error = None  # an explicit choice replaces a bad environment value
    if kernels is not None:
        kernels.set_default_threads(count, "set_num_threads")
    _sync_kernels()


def get_num_threads() -> int:
    """The library's default thread count (``num_threads=None``).

    In order, each later one winning: the CPUs this process may use (affinity
    mask, cgroup CPU quota), ``OMP_NUM_THREADS``, ``FASTEMBED_EXT_NUM_THREADS``
    (both read at import), ``set_num_threads(n)``, and a threadpoolctl limit
    while it lasts.  1 without the compiled extension, or in a serial build.
    """
    if threads_error is not None:
        raise ValueError(threads_error)
    return 1 if kernels is None else int(kernels.default_threads()[0])


def resolve_threads(num_threads: Any) -> int:
    """The thread count a kernel receives: 0 means the library default."""
    if num_threads is None:
        if threads_error is not None:
            raise ValueError(threads_error)
        return 0
    return check_num_threads(num_threads)


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
# threadpoolctl: the engine is not OpenMP, so it brings its own controller

try:
    import threadpoolctl  # type: ignore[import-untyped, import-not-found, unused-ignore]
except ImportError:  # an optional extra
    threadpoolctl = None

if threadpoolctl is not None and hasattr(threadpoolctl, "LibController"):
    class FastembedExtController(threadpoolctl.LibController):  # type: ignore[misc]
        """threadpoolctl's view of the engine, through the extension's exported
        fastembed_ext_get_num_threads / fastembed_ext_set_num_threads."""

        user_api = "fastembed_ext"
        internal_api = "fastembed_ext"
        filename_prefixes = ("_kernels",)
        check_symbols = ("fastembed_ext_get_num_threads", "fastembed_ext_set_num_threads")

        def get_num_threads(self) -> int:
            return int(self.dynlib.fastembed_ext_get_num_threads())

        def set_num_threads(self, num_threads: int) -> None:
            self.dynlib.fastembed_ext_set_num_threads(int(num_threads))

        def get_version(self) -> str:
            return __version__

        def set_additional_attributes(self) -> None:
            self.engine = kernels.build_info()["engine"] if kernels is not None else None


def _register_threadpoolctl() -> bool:
    """Let threadpoolctl see and limit the engine (``user_api="fastembed_ext"``).

    Registered at import when threadpoolctl (3.5 or later, which has a
    controller registry) is installed; then ``threadpool_info()`` lists the
    pool and ``threadpool_limits(n)`` limits it.
    """
    if kernels is None or not kernels.build_info()["parallel"] or threadpoolctl is None \
            or not hasattr(threadpoolctl, "register"):
        return False
    if not any(getattr(c, "internal_api", None) == "fastembed_ext"
               for c in getattr(threadpoolctl, "_ALL_CONTROLLERS", [])):
        threadpoolctl.register(FastembedExtController)
    return True


threadpoolctl_registered = _register_threadpoolctl()


# --------------------------------------------------------------------------
# info


def info() -> dict[str, Any]:
    """What is installed and active, and why.

    Returns
    -------
    dict
        ``version``, ``backend`` (what ``backend="auto"`` resolves to),
        ``compiled`` (bool) and ``compiled_error`` (why not), ``forced_backend``
        (from ``FASTEMBED_EXT_BACKEND``), ``openmp``, ``num_threads``,
        ``value_dtypes``, ``index_dtypes``, ``cpu`` features, ``float16_path``,
        ``prefetch_hint`` (the kernels' read prefetches: ``"t0"``, or
        ``"nta"`` on AMD), ``gather_stream_min_row_bytes`` (the shortest rows
        a gather of 8 MiB or more writes with streaming stores: 128, or 512
        on AMD) and ``build`` (the compile flags that matter for the
        numerics).
    """
    compiled = kernels is not None
    build = kernels.build_info() if compiled else {}
    try:
        auto = resolve_backend("auto")
    except (ValueError, ImportError) as exc:
        auto = f"error: {exc}"
    parallel = bool(build.get("parallel", False))
    return {
        "version": __version__,
        "backend": auto,
        "compiled": compiled,
        "compiled_error": kernels_error,
        "forced_backend": forced_backend,
        "env_errors": [e for e in (backend_error, threads_error) if e],
        "engine": build.get("engine", "none"),
        "parallel": parallel,
        "num_threads": get_num_threads() if threads_error is None else None,
        "num_threads_source": (kernels.default_threads()[1] if parallel
                               else "serial build" if compiled else "no compiled extension"),
        "cpus": cpu_budget()[1],
        "threadpoolctl": threadpoolctl_registered,
        "value_dtypes": [str(t) for t in VALUE_DTYPES],
        "optional_value_dtypes": ["bfloat16 (with ml_dtypes installed)"],
        "index_dtypes": "int32 and int64 used as they are; other integer dtypes converted",
        "cpu": kernels.cpu_features() if compiled else {},
        "float16_path": ("f16c" if compiled and kernels.f16c_active() else "portable"),
        "prefetch_hint": kernels.prefetch_hint() if compiled else None,
        "gather_stream_min_row_bytes": (kernels.gather_stream_min_row_bytes() if compiled
                                        else None),
        "build": build,
        "numpy": np.__version__,
    }
