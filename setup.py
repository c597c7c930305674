"""The optional compiled accelerator, cdc._accel; everything else about the package is in pyproject.toml.

``optional=True``: without a C compiler (or Python's headers) the build says so
and installs the pure-Python package, which is the reference implementation
and does the same work, slower. ``cdc doctor`` says which one runs.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "cdc._accel",
    sources=["cdc/_accel.c", "cdc/_accel_groups.c", "cdc/_accel_convert.c", "cdc/_accel_values.c",
             "cdc/_accel_transactions.c", "cdc/_accel_dedup.c", "cdc/_accel_wire.c", "cdc/_accel_tuple.c"],
    depends=["cdc/_accel.h", "cdc/_accel_convert.h"],
    optional=True,
)])
