"""`python -m pydsync_server ...` runs the pydsync command line."""

from pydsync_server.cli.main import entry_point

entry_point()
