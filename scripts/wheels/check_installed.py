"""Run inside a test environment: is the package the installed wheel, with its own libgomp?

    python check_installed.py SOURCE_ROOT [--serial]

Fails (exit 1) if fastembed_ext or its extension is imported from SOURCE_ROOT
rather than site-packages, if the compiled backend is missing, or (unless
--serial) if the build lacks OpenMP or the libgomp the process mapped is not
the copy bundled in the wheel's fastembed_ext.libs/.  Prints one line of facts
(Python, NumPy, package version, OpenMP, libgomp path) for the summary.
"""

import os
import sys


def main(argv):
    source_root = os.path.realpath(argv[0])
    serial = "--serial" in argv[1:]
    import numpy as np

    import fastembed_ext as fe
    from fastembed_ext import _kernels

    failures = []
    for mod in (fe, _kernels):
        path = os.path.realpath(mod.__file__)
        if path.startswith(source_root + os.sep):
            failures.append(f"{mod.__name__} imported from the source tree: {path}")
        if "site-packages" not in path:
            failures.append(f"{mod.__name__} not imported from site-packages: {path}")

    info = fe.info()
    if not info.get("compiled"):
        failures.append(f"compiled kernels missing: {info.get('compiled_error')}")
    gomp = []
    if sys.platform.startswith("linux"):
        with open("/proc/self/maps") as f:
            gomp = sorted({line.split()[-1] for line in f if "libgomp" in line})
    if not serial:
        if not info.get("openmp"):
            failures.append(f"OpenMP build expected, info()['openmp'] = {info.get('openmp')!r}")
        if sys.platform.startswith("linux"):
            if len(gomp) != 1 or "fastembed_ext.libs" not in gomp[0]:
                failures.append(f"libgomp not loaded from the wheel's fastembed_ext.libs/: {gomp}")

    try:
        from importlib.metadata import version
        torch = version("torch")
    except Exception:
        torch = None
    print(f"python {sys.version.split()[0]}  numpy {np.__version__}  torch {torch}  fastembed_ext {fe.__version__}"
          f"  backend {info.get('backend')!r}  openmp {info.get('openmp')!r}  libgomp {gomp or None}")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
