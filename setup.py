"""Build the compiled kernels.

Everything else about the package lives in pyproject.toml.  Environment:

FASTEMBED_EXT_OPENMP=0   build without OpenMP (every loop on one thread)
FASTEMBED_EXT_DEBUG=1    bounds checks on, -O0 -g, for a debugging build
"""
import json
import os
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("FASTEMBED_EXT_DEBUG", "0") == "1"
WANT_OPENMP = os.environ.get("FASTEMBED_EXT_OPENMP", "1") != "0"

# Bit-equality with NumPy depends on these: no contraction into FMA, no
# fast-math, and nothing tuned to the build machine (-march=native).
if DEBUG:
    BASE_FLAGS = ["-O0", "-g", "-ffp-contract=off", "-fno-fast-math"]
else:
    BASE_FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math"]
OPENMP_FLAGS = {"unix": ["-fopenmp"], "msvc": ["/openmp"]}


def _compiles_with_openmp(compiler, flags):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=flags)
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    """Adds the flags the compiler understands, and OpenMP where it links."""

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        if ctype == "msvc":
            cflags = ["/O2", "/fp:precise"]
        else:
            cflags = list(BASE_FLAGS)
        omp = OPENMP_FLAGS.get(ctype, [])
        use_omp = WANT_OPENMP and omp and _compiles_with_openmp(self.compiler, omp)
        if WANT_OPENMP and not use_omp:
            print("fastembed_ext: OpenMP not available, building the serial kernels", file=sys.stderr)
        reported = " ".join(cflags + (omp if use_omp else []))
        for ext in self.extensions:
            ext.extra_compile_args = cflags + (omp if use_omp else [])
            ext.extra_link_args = list(omp) if use_omp else []
            ext.define_macros.append(("FE_BUILD_CFLAGS", json.dumps(reported)))
        super().build_extensions()


directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

extensions = [
    Extension(
        "fastembed_ext._kernels",
        ["src/fastembed_ext/_kernels.pyx"],
        include_dirs=[numpy.get_include(), "src/fastembed_ext"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_21_API_VERSION")],
        depends=["src/fastembed_ext/_fe_add.h", "src/fastembed_ext/_fe_half.h",
                 "src/fastembed_ext/_openmp.pxd"],
    )
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=directives, include_path=["src"]),
    cmdclass={"build_ext": BuildExt},
)
