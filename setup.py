"""Only for the cffi extension; all metadata lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["pydsync_server/_native/_ffi_build.py:ffibuilder"])
