"""Build the compiled kernels.

Everything else about the package lives in pyproject.toml.  Environment:

FASTEMBED_EXT_THREADS=0  build the serial engine (every loop on one thread);
                         FASTEMBED_EXT_OPENMP=0, its earlier name, works too
FASTEMBED_EXT_DEBUG=1    bounds checks on, -O0 -g, for a debugging build
"""
import json
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("FASTEMBED_EXT_DEBUG", "0") == "1"
SERIAL = "0" in (os.environ.get("FASTEMBED_EXT_THREADS"), os.environ.get("FASTEMBED_EXT_OPENMP"))

# Bit-equality with NumPy depends on these: no contraction into FMA, no
# fast-math, and nothing tuned to the build machine (-march=native).
if DEBUG:
    BASE_FLAGS = ["-O0", "-g", "-ffp-contract=off", "-fno-fast-math"]
else:
    BASE_FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math"]


class BuildExt(build_ext):
    """Adds the flags the compiler understands: the engine's threads are pthreads
    (POSIX); MSVC builds the serial engine."""

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        if ctype == "msvc":
            cflags, ldflags = ["/O2", "/fp:precise"], []
        else:
            cflags = list(BASE_FLAGS) + ([] if SERIAL else ["-pthread"])
            ldflags = [] if SERIAL else ["-pthread"]
        reported = " ".join(cflags)
        for ext in self.extensions:
            ext.extra_compile_args = cflags
            ext.extra_link_args = ldflags
            if SERIAL:
                ext.define_macros.append(("FE_SERIAL_ENGINE", "1"))
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
        depends=["src/fastembed_ext/_fe_add.h", "src/fastembed_ext/_fe_bag.h", "src/fastembed_ext/_fe_half.h",
                 "src/fastembed_ext/_fe_engine.h"],
    )
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=directives, include_path=["src"]),
    cmdclass={"build_ext": BuildExt},
)
