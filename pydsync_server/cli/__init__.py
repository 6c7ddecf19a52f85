"""cli layer of pydsync."""
