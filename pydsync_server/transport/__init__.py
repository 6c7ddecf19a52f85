"""transport layer of pydsync."""
