"""`sync`, `backup` and `dsync-server`: open the stores, connect the brains, report.

Local destinations run both brains in this process (`run_local`); command
destinations get a child process and the stream protocol (`run_master`), `tcp:`/
`tcps:` destinations a doveadm server connection (§12);
`dsync-server` speaks the protocol on stdin/stdout (`run_slave`), where nothing but
protocol bytes may appear (the transport points fd 1 at stderr for the session).
`-U` notifies Dovecot's replicator after a successful sync (dsync-protocol.md §2.2).
`-v`, `--json` and `--dry-run` watch the run through watch.py: the local stores'
writes and the master brain's events are observed, a dry run works on snapshots.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from ..brain.brain import parse_saved_state
from ..brain.run import run_local, run_master, run_slave
from ..brain.settings import SyncResult, SyncSettings
from ..errors import DsyncError, MailError, StorageError, UsageError
from ..protocol.items import SYNC_TYPE_FULL
from ..storage.base import Storage
from ..storage.location import MailLocation, UserEnv
from ..transport import DEFAULT_TIMEOUT
from .context import Context
from .destination import CommandDestination, LocalDestination, TcpDestination, classify
from .hooked import PurgeWatch, purge_after, run_hooked
from .lock import user_lock_for
from .options import BACKUP_OPTIONS, SYNC_OPTIONS, Parsed
from .sync_options import build_settings, parse_uint
from .users import run_users, select_users, worker_count
from .watch import Watch, observed, watched

if TYPE_CHECKING:
    from ..transport.stream import ByteStream
    from .report import UserRun

# transport/ is imported where a remote peer is used, the dry-run and report modules
# where -v/--json/--dry-run ask for them: a plain local sync never pays for them.

Log = Callable[[str], None]
DESYNC_WARNING = "Mailbox changes caused a desync. You may want to run dsync again: "


def run_sync(ctx: Context, command: str, parsed: Parsed, operands: list[str]) -> int:
    """`sync`/`backup` with the given options and destination words; many users
    (`-A`, `-F`, `-u` mask) go through a worker pool (users.py); with `-S` the doveadm
    server at that address runs it (doveadm_remote.py)."""
    if parsed.value("socket_path") is not None:
        if watched(parsed):  # the server runs the brains: nothing here to watch
            raise UsageError("-v, --json and --dry-run can't be used with -S")
        table = SYNC_OPTIONS if command == "sync" else BACKUP_OPTIONS
        from .doveadm_remote import run_on_server  # -S only: its imports cost start-up

        return run_on_server(ctx, command, table, parsed, operands)
    lookup = not parsed.flag("no_userdb_lookup")
    users = select_users(ctx, parsed)
    watch = Watch(ctx, command, parsed)
    if users is None:
        given = parsed.value("user") is not None
        try:
            user = watch.user_env(parsed.value("user"), operands, lookup=lookup)
            code = _sync_user(ctx, command, parsed, operands, user, watch, user_given=given)[0]
        except DsyncError as exc:
            watch.finish(int(exc.exit_code))
            raise
        watch.finish(code)
        return code

    def one(name: str) -> tuple[int, str]:
        user = watch.user_env(name, operands, lookup=lookup)
        return _sync_user(ctx, command, parsed, operands, user, watch, user_given=True)

    watch.many_users = True
    code = run_users(ctx, users, worker_count(ctx, parsed), one)
    watch.finish(code)
    return code


def _sync_user(
    ctx: Context,
    command: str,
    parsed: Parsed,
    operands: list[str],
    user: UserEnv,
    watch: Watch,
    *,
    user_given: bool,
) -> tuple[int, str]:
    """One user's sync between the plugin hooks: (exit code, first error)."""
    run = watch.user(user.user, " ".join(operands), remote_observed=True)
    try:
        code, error = _sync_watched(ctx, command, parsed, operands, user, watch, run, user_given)
    except DsyncError as exc:
        if run is not None:
            run.failed(exc)
        raise
    watch.finish_user(run)
    return code, error


def _sync_watched(
    ctx: Context,
    command: str,
    parsed: Parsed,
    operands: list[str],
    user: UserEnv,
    watch: Watch,
    run: UserRun | None,
    user_given: bool,
) -> tuple[int, str]:
    user_settings = ctx.settings_for(user)
    settings = build_settings(
        parsed,
        command,
        user_settings,
        hostname=ctx.hostname,
        now=ctx.clock(),
        debug=ctx.debug,
    )
    if parsed.flag("mail_replica"):
        if operands:
            raise UsageError("Don't give mail location with -d parameter")
        replica = user_settings.get("mail_replica", "")
        if not replica:
            raise StorageError("User has no mail_replica in userdb", MailError.NOTFOUND)
        operands = [replica]
    dest = classify(
        operands,
        user=user,
        user_given=user_given,
        settings=user_settings,
        legacy=parsed.flag("legacy"),
    )
    if isinstance(dest, LocalDestination) and settings.visible_namespaces:
        raise DsyncError("-N parameter requires syncing with remote host")
    if run is not None:
        run.remote_observed = isinstance(dest, LocalDestination)
    timeout = float(parse_uint(parsed.value("timeout"), "-T", int(DEFAULT_TIMEOUT)))
    source = ctx.location_with(user, parsed.values("storage_setting"))

    def session() -> tuple[SyncResult, bool]:
        with ctx.storage_at(source, user.home, user_settings) as opened:
            storage = observed(opened, run, remote=False)
            if isinstance(dest, LocalDestination):
                result = _run_local(
                    ctx, user, storage, source, dest, settings, user_settings, run=run
                )
                return result, parse_saved_state(settings, lambda _l: None)[0] == SYNC_TYPE_FULL
            if isinstance(dest, TcpDestination):
                notify = parsed.flag("replicator_notify")
                return _run_tcp(
                    ctx, user, storage, dest, settings, timeout, parsed.value("rawlog"), notify, run
                )
            rawlog = parsed.value("rawlog")
            return _run_command(ctx, user, storage, dest, settings, timeout, rawlog, run=run)

    if watch.dry_run:
        if not isinstance(dest, LocalDestination):
            from .dry_run import refuse_remote

            raise refuse_remote()
        # No hooks (no kick, no notification, no purge): nothing was synced.
        result = _dry_run(ctx, user, source, dest, settings, user_settings, run)
        code = _report(ctx, user, settings, result, state=False)
        if run is not None:
            run.finish(result)
        return code, result.errors[0] if result.errors else ""
    result, full = run_hooked(ctx, command, user, user_settings, session)
    code = _report(ctx, user, settings, result, state=watch.state_on_stdout)
    if run is not None:
        run.finish(result, state=result.state if settings.state is not None else None)
    if parsed.flag("replicator_notify") and code == 0:
        state = result.state if settings.state is not None and result.state else ""
        _notify(ctx, user, full=full, state=state)
    return code, result.errors[0] if result.errors else ""


def _notify(ctx: Context, user: UserEnv, *, full: bool, state: str) -> None:
    """`-U` after success: tell the replicator (`base_dir` setting, default /run/dovecot)."""
    from ..transport.replicator import notify_replicator

    base_dir = ctx.config.as_mapping().get("base_dir", "")
    notify_replicator(
        base_dir, user.user, full=full, state=state, log=ctx.log_for(f"dsync({user.user})")
    )


def _run_local(
    ctx: Context,
    user: UserEnv,
    storage: Storage,
    here: MailLocation,
    dest: LocalDestination,
    settings: SyncSettings,
    user_settings: Mapping[str, str],
    *,
    run: UserRun | None = None,
) -> SyncResult:
    """Both brains here; a `-P` purge of the destination goes through the hook."""
    _check_distinct(here, dest)
    with ctx.storage_at(dest.location, user.home, user_settings) as opened:
        other = observed(opened, run, remote=True)
        result = run_local(
            storage,
            other,
            replace(settings, purge_remote=False),
            clock=ctx.clock,
            log=ctx.log_for(f"dsync({user.user})"),
            user_lock=user_lock_for(user.home),
            observer=run,
        )
        if settings.purge_remote:
            purge_after(ctx, other, user, user_settings, result)
        return result


def _check_distinct(here: MailLocation, dest: LocalDestination) -> None:
    if os.path.realpath(here.path) == os.path.realpath(dest.location.path):
        raise DsyncError(
            f"Both source and destination mail_location points to same directory: {here.path}"
        )


def _dry_run(
    ctx: Context,
    user: UserEnv,
    here: MailLocation,
    dest: LocalDestination,
    settings: SyncSettings,
    user_settings: Mapping[str, str],
    run: UserRun | None,
) -> SyncResult:
    """`--dry-run`: the sync on snapshots of both stores (dry_run.py), writes observed."""
    _check_distinct(here, dest)
    from ..storage.observed import WriteEvent
    from .dry_run import snapshot
    from .report import REMOTE

    with snapshot(here) as mine, snapshot(dest.location) as theirs:
        storage, other = ctx.open(mine), ctx.open(theirs)
        try:
            result = run_local(
                observed(storage, run, remote=False),
                observed(other, run, remote=True),
                replace(settings, purge_remote=False),
                clock=ctx.clock,
                log=ctx.log_for(f"dsync({user.user})"),
                user_lock=user_lock_for(user.home),
                observer=run,
            )
            if settings.purge_remote and run is not None:
                run.sink(REMOTE)(WriteEvent("purge", ""))
            return result
        finally:
            other.close()
            storage.close()


def _run_command(
    ctx: Context,
    user: UserEnv,
    storage: Storage,
    dest: CommandDestination,
    settings: SyncSettings,
    timeout: float,
    rawlog: str | None,
    *,
    run: UserRun | None = None,
) -> tuple[SyncResult, bool]:
    """The session's result, and whether it was a full sync (for `-U`)."""
    from ..transport.process import spawn_remote

    def child_log(line: str) -> None:  # the child's stderr, copied as is (§2.4)
        ctx.stderr.write(line + "\n")
        ctx.stderr.flush()

    try:
        remote = spawn_remote(
            dest.argv,
            log=child_log,
            prefix_user=dest.prefix_user,
            timeout=timeout,
            rawlog=rawlog,
            env=ctx.child_environ(),  # cleaned as Dovecot does; whole with -k
        )
    except OSError as exc:
        raise DsyncError(f"Couldn't run {' '.join(dest.argv)}: {exc.strerror or exc}") from exc
    return _run_master(ctx, user, storage, remote.stream, settings, remote.finish, run)


def _run_tcp(
    ctx: Context,
    user: UserEnv,
    storage: Storage,
    dest: TcpDestination,
    settings: SyncSettings,
    timeout: float,
    rawlog: str | None,
    notify: bool,
    run: UserRun | None = None,
) -> tuple[SyncResult, bool]:
    """A doveadm server session; `-r` logs its dsync bytes (not the doveadm preamble
    or the multiplex framing)."""
    from ..transport.rawlog import LoggedStream, RawLog

    try:
        raw = RawLog(rawlog) if rawlog is not None else None
    except OSError as exc:
        raise DsyncError(f"rawlog: open({rawlog}) failed: {exc.strerror or exc}") from exc
    try:
        from .doveadm_client import tcp_stream  # tcp: only (ssl, socket)

        stream = tcp_stream(ctx, user, dest, timeout=timeout, replicator_notify=notify)
    except BaseException:
        if raw is not None:
            raw.close()
        raise
    if raw is None:
        return _run_master(ctx, user, storage, stream, settings, stream.close, run)
    logged = LoggedStream(stream, raw, stream.close)
    return _run_master(ctx, user, storage, logged, settings, logged.close, run)


def _run_master(
    ctx: Context,
    user: UserEnv,
    storage: Storage,
    stream: ByteStream,
    settings: SyncSettings,
    finish: Callable[[], object],
    run: UserRun | None = None,
) -> tuple[SyncResult, bool]:
    """The master brain on `stream`; `finish` ends the transport afterwards."""
    from ..transport.replicator import SyncTypeWatch
    from ..transport.stream import StreamChannel

    try:
        channel = SyncTypeWatch(StreamChannel(stream, name="remote"))
        result = run_master(
            storage,
            channel,
            settings,
            clock=ctx.clock,
            log=ctx.log_for(f"dsync({user.user})"),
            user_lock=user_lock_for(user.home),
            observer=run,
        )
        return result, channel.full
    finally:
        finish()


def _report(
    ctx: Context, user: UserEnv, settings: SyncSettings, result: SyncResult, *, state: bool = True
) -> int:
    """Errors and the desync warning on stderr, the `-s` state on stdout (if `state`)."""
    log = ctx.log_for(f"dsync({user.user})")
    for error in result.errors:
        log(f"Error: {error}")
    for warning in result.warnings:
        log(f"Warning: {warning}")
    if result.changes_during_sync is not None:
        log(f"Warning: {DESYNC_WARNING}{result.changes_during_sync}")
    if state and settings.state is not None and result.state is not None:
        ctx.stdout.write(result.state.encode("ascii") + b"\n")
        ctx.stdout.flush()
    return int(result.exit_code)


def run_server(ctx: Context, parsed: Parsed, operands: list[str]) -> int:
    """`dsync-server [options] [dsync-server]`: the slave on stdin/stdout."""
    from ..transport.process import SERVER_WORD, read_user_line, stdio_stream

    if operands not in ([], [SERVER_WORD]):
        raise UsageError(f"Unexpected parameter: {operands[0]}")
    timeout = float(parse_uint(parsed.value("timeout"), "-T", int(DEFAULT_TIMEOUT)))
    user_name = parsed.value("user")
    if parsed.flag("user_from_stdin"):
        # Our own remoteprefix: wrapper (§2.1); the line wins over -u and USER. Read
        # before the stream takes fd 0, byte by byte, so no protocol byte is lost.
        user_name = read_user_line(0, timeout=timeout)
    user = ctx.user_env(user_name, lookup=not parsed.flag("no_userdb_lookup"))
    log = ctx.log_for(f"dsync-server({user.user})")
    stream = stdio_stream(timeout=timeout, rawlog=parsed.value("rawlog"))
    try:
        result = slave_session(
            ctx, user, stream, log, replicator_notify=parsed.flag("replicator_notify")
        )
    finally:
        stream.close()
    return int(result.exit_code)


def slave_session(
    ctx: Context, user: UserEnv, stream: ByteStream, log: Log, *, replicator_notify: bool
) -> SyncResult:
    """The slave brain on `stream` for `user` (`dsync-server`, and the doveadm server's
    `dsync-server` command) between the plugin hooks; logs its errors, then the `-U`
    notification."""
    from ..transport.replicator import notify_replicator

    settings = ctx.settings_for(user)
    result, full = run_hooked(
        ctx, "dsync-server", user, settings, lambda: _slave(ctx, user, stream, log, settings)
    )
    for error in result.errors:
        log(f"Error: {error}")
    # -U never reads anything from the master: the notification comes after the session.
    if replicator_notify and result.exit_code == 0:
        base_dir = settings.get("base_dir", "")
        notify_replicator(base_dir, user.user, full=full, log=log)
    return result


def _slave(
    ctx: Context, user: UserEnv, stream: ByteStream, log: Log, settings: Mapping[str, str]
) -> tuple[SyncResult, bool]:
    """run_slave with the master's `-P` taken out of its `H`: the purge goes through
    the `pydsync_purge` hook once the session did not fail."""
    from ..transport.replicator import SyncTypeWatch
    from ..transport.stream import StreamChannel

    with ctx.user_storage(user) as storage:
        purge = PurgeWatch(StreamChannel(stream, name="remote"))
        channel = SyncTypeWatch(purge)
        result = run_slave(
            storage,
            channel,
            hostname=ctx.hostname,
            clock=ctx.clock,
            log=log,
            user_lock=user_lock_for(user.home),
        )
        if purge.purge_requested:
            purge_after(ctx, storage, user, settings, result)
    return result, channel.full
