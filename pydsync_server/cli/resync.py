"""`pydsync force-resync` and `pydsync purge`: doveadm's commands of the same names.

force-resync rebuilds the indexes of the mailboxes matching a mask from their mail
files (`Storage.force_resync`), warning "<mailbox>: Rebuilding index" for each as
doveadm does, plus one warning per file it had to leave out; a mask matching nothing
is no error (doveadm 2.3.19 exits 0). purge reclaims the space of expunged mail
through the purge hook (`Storage.purge()` unless a plugin replaces it): nothing to do
for one-file-per-message stores, where doveadm's purge is silent too.
"""

from __future__ import annotations

from ..errors import ExitCode
from .context import Context
from .mailboxes import matching_entries
from .options import CommandUsageError, Parsed

FORCE_RESYNC_USAGE = "usage: pydsync force-resync [-u user] [-f] <mailbox mask>"


def force_resync(ctx: Context, parsed: Parsed, operands: list[str]) -> int:
    if not operands:
        raise CommandUsageError("force-resync: a mailbox mask is needed", FORCE_RESYNC_USAGE)
    user = ctx.user_env(parsed.value("user"), lookup=not parsed.flag("no_userdb_lookup"))
    log = ctx.log_for(f"pydsync({user.user})")
    with ctx.user_storage(user) as storage:
        names = [e.vname for e in matching_entries(storage, operands) if e.guid is not None]
        for name in names:
            log(f"Warning: {name}: Rebuilding index")
        problems: list[str] = []
        if operands == ["*"] and names:
            problems = storage.force_resync(None)  # one pass (mdbox rebuilds it all anyway)
        else:
            for name in names:
                problems += storage.force_resync(name)
        for problem in problems:
            log(f"Warning: {problem}")
    return ExitCode.OK


def purge(ctx: Context, parsed: Parsed, operands: list[str]) -> int:
    if operands:
        raise CommandUsageError("purge: no arguments expected", "usage: pydsync purge [-u user]")
    user = ctx.user_env(parsed.value("user"), lookup=not parsed.flag("no_userdb_lookup"))
    with ctx.user_storage(user) as storage:
        ctx.hooks.purge(storage, user, ctx.settings_for(user), ctx.log_for(f"pydsync({user.user})"))
    return ExitCode.OK
