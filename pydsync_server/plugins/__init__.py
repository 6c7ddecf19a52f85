"""plugins layer of pydsync."""
