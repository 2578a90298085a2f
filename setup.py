"""The optional C extension; everything else is declared in pyproject.toml.

``optional=True``: without a C compiler the install still succeeds and the inner loops run in
Python (moonstream/native.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("moonstream._native", ["moonstream/_native.c"], optional=True)])
