"""Check what an sdist or a wheel of fastembed_ext carries.  Standard library only.

    python inspect_dist.py sdist SDIST.tar.gz FILELIST   # FILELIST: the source snapshot, one path a line
    python inspect_dist.py wheel WHEEL.whl [FILELIST]

sdist: every file of the snapshot under src/, tests/, bench/, examples/ and the top-level
build files (LICENSE and CHANGELOG.md included) must be in the sdist, and nothing
generated (.c, .so, .o, build/).

wheel: the package's modules, stub, py.typed, the compiled extension and the
LICENSE (in .dist-info/licenses/) must be there (with FILELIST: every
.py/.pyi/py.typed of src/fastembed_ext/ in the snapshot); sources
(.c/.pyx/.pxd/.h), objects, build/, tests/ and src/ must not.  Nothing may be
bundled in fastembed_ext.libs/: the engine is plain pthreads, so a repaired
wheel grafts no libgomp (--no-libgomp, its earlier switch, is accepted and
changes nothing).

Prints one line per finding and exits 1 on any failure.
"""

import fnmatch
import sys
import tarfile
import zipfile
from pathlib import PurePosixPath

# what the sdist must carry from the snapshot (MANIFEST.in's promise)
SDIST_REQUIRED_GLOBS = ("src/*", "tests/*", "bench/*", "examples/*", "README.md", "LICENSE",
                        "CHANGELOG.md", "pyproject.toml", "setup.py")
# generated or build-only: must never ship
# (setuptools' src/fastembed_ext.egg-info/ in the sdist is normal metadata)
FORBIDDEN_GLOBS = ("*.c", "*.o", "*.obj", "*.so", "*.pyd", "*.html", "build/*", "*/build/*",
                   "*/__pycache__/*", "*.pyc")
WHEEL_SOURCE_GLOBS = ("*.c", "*.pyx", "*.pxd", "*.h", "*.o", "*.obj", "*.html",
                      "build/*", "tests/*", "bench/*", "src/*", "*.egg-info/*", "*/__pycache__/*", "*.pyc")
WHEEL_REQUIRED = ("fastembed_ext/__init__.py", "fastembed_ext/__main__.py",
                  "fastembed_ext/_runtime.py", "fastembed_ext/_checks.py",
                  "fastembed_ext/_embedding.py", "fastembed_ext/_bag.py", "fastembed_ext/_sparse.py",
                  "fastembed_ext/_reference.py", "fastembed_ext/_workloads.py",
                  "fastembed_ext/_version.py", "fastembed_ext/py.typed")


def _match(path, globs):
    return any(fnmatch.fnmatch(path, g) for g in globs)


def check_sdist(sdist, filelist):
    with tarfile.open(sdist) as tar:
        members = [m.name for m in tar.getmembers() if m.isfile()]
    # strip the "fastembed_ext-X.Y.Z/" prefix
    names = {str(PurePosixPath(*PurePosixPath(n).parts[1:])) for n in members}
    with open(filelist) as f:
        snapshot = [line.strip() for line in f if line.strip()]
    failures = []
    for path in snapshot:
        if _match(path, SDIST_REQUIRED_GLOBS) and not _match(path, FORBIDDEN_GLOBS) and path not in names:
            failures.append(f"sdist is missing {path}")
    for path in sorted(names):
        if _match(path, FORBIDDEN_GLOBS):
            failures.append(f"sdist carries a generated file {path}")
    if "LICENSE" not in names:
        failures.append("sdist has no LICENSE")
    print(f"sdist {sdist}: {len(names)} files")
    return failures


def check_wheel(wheel, filelist=None):
    with zipfile.ZipFile(wheel) as zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
    required = list(WHEEL_REQUIRED)
    if filelist:
        with open(filelist) as f:
            for line in f:
                path = line.strip()
                if _match(path, ("src/fastembed_ext/*.py", "src/fastembed_ext/*.pyi",
                                 "src/fastembed_ext/py.typed")):
                    required.append(path[len("src/"):])
    failures = []
    for path in sorted(set(required)):
        if path not in names:
            failures.append(f"wheel is missing {path}")
    ext = [n for n in names if fnmatch.fnmatch(n, "fastembed_ext/_kernels*.so")
           or fnmatch.fnmatch(n, "fastembed_ext/_kernels*.pyd")]
    if len(ext) != 1:
        failures.append(f"wheel has {len(ext)} compiled _kernels modules: {ext}")
    if not any(fnmatch.fnmatch(n, "fastembed_ext/*.pyi") for n in names):
        failures.append("wheel has no .pyi stub")
    for path in names:
        if _match(path, WHEEL_SOURCE_GLOBS):
            failures.append(f"wheel carries a source or build file {path}")
    if not any(fnmatch.fnmatch(n, "*.dist-info/licenses/LICENSE") for n in names):
        failures.append("wheel has no .dist-info/licenses/LICENSE")
    libs = [n for n in names if n.startswith("fastembed_ext.libs/")]
    for lib in libs:
        failures.append(f"wheel bundles {lib}: the engine needs only pthreads and the C library")
    print(f"wheel {PurePosixPath(wheel).name}: {len(names)} files; extension {ext}; bundled libs {libs}")
    return failures


def main(argv):
    if len(argv) >= 3 and argv[0] == "sdist":
        failures = check_sdist(argv[1], argv[2])
    elif len(argv) >= 2 and argv[0] == "wheel":
        rest = [a for a in argv[2:] if not a.startswith("--")]
        failures = check_wheel(argv[1], rest[0] if rest else None)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for f in failures:
        print("FAIL:", f)
    if not failures:
        print("ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
