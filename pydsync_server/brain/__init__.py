"""brain layer of pydsync."""
