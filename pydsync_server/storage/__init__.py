"""storage layer of pydsync."""
