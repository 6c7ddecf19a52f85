"""Ready-made pydsync plugins; enable one with `-o plugins=hooks.<name>` (or the
`plugins` setting in the config file). See pydsync-hooks(7)."""
