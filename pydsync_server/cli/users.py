"""Which users a `sync`/`backup` runs for, and running them through a worker pool.

`-A` is every user the userdb plugins list, `-u` with `*`/`?` those matching the
mask, `-F file` one user per line. Each user runs in its own worker thread (its own
stores, brains and child process); one user's failure never stops the others. The
exit code follows doveadm: the first failure's code, a temporary failure (75)
overriding any other, and a summary line names the users that failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from ..errors import ConfigError, DsyncError, ExitCode, UsageError
from ..plugins.userdb import is_mask, mask_match
from .context import Context
from .options import Parsed

DEFAULT_WORKERS = 4
WORKERS_SETTING = "dsync_workers"


class UserOutcome(NamedTuple):
    """One user's exit code and first error (a NamedTuple: a tenth of a dataclass's
    class-creation cost, paid at every start-up)."""

    user: str
    code: int
    reason: str = ""


def select_users(ctx: Context, parsed: Parsed) -> list[str] | None:
    """The users of a multi-user run, or None for the usual single user."""
    mask = parsed.value("user")
    if parsed.flag("all_users") and parsed.value("user_file") is not None:
        raise UsageError("-A and -F can't be used together")
    if parsed.value("user_file") is not None:
        return read_user_file(parsed.value("user_file") or "")
    if parsed.flag("all_users") or (mask is not None and is_mask(mask)):
        if not ctx.hooks.can_iterate_users:
            raise ConfigError(
                "Listing users needs a userdb plugin (e.g. plugins=hooks.passwd_file)"
            )
        users = ctx.hooks.userdb_iterate(ctx.config.as_mapping())
        if mask is not None and is_mask(mask):
            users = [u for u in users if mask_match(mask, u)]
        return users
    return None


def read_user_file(path: str) -> list[str]:
    """`-F`: one user per line (the first tab-separated field; blank lines skipped)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise UsageError(f"-F {path}: {exc.strerror or exc}") from exc
    return [name for line in lines if (name := line.split("\t", 1)[0].strip())]


def worker_count(ctx: Context, parsed: Parsed) -> int:
    """`--workers N`, else the `dsync_workers` setting, else 4."""
    value = parsed.value("workers") or ctx.config.get(WORKERS_SETTING) or str(DEFAULT_WORKERS)
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"Invalid worker count: {value}")
    return int(value)


def worst_exit_code(codes: Sequence[int]) -> int:
    """doveadm's rule: the first failure's code, but EX_TEMPFAIL overrides the rest."""
    failed = [code for code in codes if code != ExitCode.OK]
    if ExitCode.TEMPFAIL in failed:
        return int(ExitCode.TEMPFAIL)
    return failed[0] if failed else int(ExitCode.OK)


def run_users(
    ctx: Context, users: Sequence[str], workers: int, one: Callable[[str], tuple[int, str]]
) -> int:
    """Run `one(user)` for every user, `workers` at a time; returns the exit code.

    `one` returns (exit code, first error); a `DsyncError` it raises fails only that
    user. Anything else is a bug: it propagates once every user has finished.
    """

    def job(user: str) -> UserOutcome:
        try:
            code, reason = one(user)
        except DsyncError as exc:
            ctx.log_for(f"dsync({user})")(f"Error: {exc}")
            return UserOutcome(user, int(exc.exit_code), str(exc))
        return UserOutcome(user, code, reason)

    if len(users) == 1 or workers == 1:
        # the usual single user runs here (no pool to import and start)
        outcomes = [job(user) for user in users]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dsync-user") as pool:
            futures = [pool.submit(job, user) for user in users]
        outcomes = [future.result() for future in futures]
    failed = [o for o in outcomes if o.code != ExitCode.OK]
    if failed:
        ctx.error(summary(failed, len(outcomes)))
    return worst_exit_code([o.code for o in outcomes])


def summary(failed: Sequence[UserOutcome], total: int) -> str:
    """`2 of 3 users failed: bob (exit 75: why), carol (exit 67: why)`."""
    parts = [f"{o.user} (exit {o.code}{': ' + o.reason if o.reason else ''})" for o in failed]
    return f"{len(failed)} of {total} users failed: {', '.join(parts)}"
