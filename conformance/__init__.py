"""The same dsync scenarios, as data, against any implementation: pydsync or real doveadm.

See conformance/README.md; run with ``python -m conformance.runner``.
"""
