"""Run a configured command template (`%u`, `%n`, `%d`, `%h`) for a user; failures
become log lines, never exceptions, because kick and purge must not fail a sync."""

from __future__ import annotations

import shlex
import subprocess

from pydsync_server.plugins.hookspecs import Log
from pydsync_server.storage.location import UserEnv, expand_vars

TIMEOUT = 60.0


def run_command(what: str, template: str, user: UserEnv, log: Log) -> bool:
    """Run `template` split like a shell would (variables expanded per word, so a
    user name is never split or interpreted); True when it exited 0."""
    try:
        argv = [expand_vars(word, user) for word in shlex.split(template)]
    except ValueError as exc:
        log(f"Error: {what}: invalid command {template!r}: {exc}")
        return False
    if not argv:
        log(f"Error: {what}: empty command")
        return False
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"Error: {what}: {' '.join(argv)} failed: {exc}")
        return False
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1:] or [""]
        log(f"Error: {what}: {' '.join(argv)} exited {proc.returncode}: {detail[0]}".rstrip(": "))
        return False
    return True
