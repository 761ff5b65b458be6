"""Run inside a test environment: is the package the installed wheel, with its engine?

    python check_installed.py SOURCE_ROOT [--serial]

Fails (exit 1) if fastembed_ext or its extension is imported from SOURCE_ROOT
rather than site-packages, if the compiled backend is missing, if (unless
--serial) the build has no parallel engine, or if the extension pulls in an
OpenMP runtime (the engine is plain pthreads: a wheel bundles no libgomp).
Prints one line of facts (Python, NumPy, package version, engine) for the summary.
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
    omp = []
    if sys.platform.startswith("linux"):
        with open("/proc/self/maps") as f:
            omp = sorted({line.split()[-1] for line in f
                          if "fastembed_ext" in line and "omp" in line.rsplit("/", 1)[-1]})
    if omp:
        failures.append(f"an OpenMP runtime shipped with the wheel: {omp}")
    if not serial and not info.get("parallel"):
        failures.append(f"a parallel engine expected, info()['engine'] = {info.get('engine')!r}")

    try:
        from importlib.metadata import version
        torch = version("torch")
    except Exception:
        torch = None
    print(f"python {sys.version.split()[0]}  numpy {np.__version__}  torch {torch}  fastembed_ext {fe.__version__}"
          f"  backend {info.get('backend')!r}  engine {info.get('engine')!r}")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
