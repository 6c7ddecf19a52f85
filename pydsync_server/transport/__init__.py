"""transport layer of pydsync."""

DEFAULT_TIMEOUT = 600.0  # doveadm's -T default (dsync-protocol.md §10.2)
