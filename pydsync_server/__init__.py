"""pydsync: a Python implementation of Dovecot dsync, wire-compatible with Dovecot."""

__version__ = "0.1.0"
