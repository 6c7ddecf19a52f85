"""protocol layer of pydsync."""
