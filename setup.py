"""The optional C extension; everything else is declared in pyproject.toml.

``moonstream._native`` is built from the C files in moonstream/native_src/ (a folder not named
``_native``: without the built module, a ``_native`` folder would import as an empty namespace package
instead of failing as moonstream/native.py expects). ``optional=True``: without a C compiler the install
still succeeds and the inner loops run in Python (moonstream/native.py).
"""

from glob import glob

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "moonstream._native",
            sorted(glob("moonstream/native_src/*.c")),
            depends=["moonstream/native_src/native.h"],
            optional=True,
        )
    ]
)
