"""One user's session between the plugin hooks: before_sync, the session, after_sync
(also on failure), then kick after success; and the `-P` purge routed through the
`pydsync_purge` hook instead of the brain's own `Storage.purge()`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from ..brain.settings import SyncResult
from ..errors import DsyncError, ExitCode
from ..protocol.channel import Channel
from ..protocol.items import Handshake, Item
from ..storage.base import Storage
from ..storage.location import UserEnv
from .context import Context

Session = Callable[[], tuple[SyncResult, bool]]
# A purge follows a run that did not fail (a desync warning is not a failure, §8.4).
PURGE_AFTER = (ExitCode.OK, ExitCode.CHANGES_DURING_SYNC)


def run_hooked(
    ctx: Context, command: str, user: UserEnv, settings: Mapping[str, str], session: Session
) -> tuple[SyncResult, bool]:
    """`session()` between the hooks; its (result, full-sync) pair is returned."""
    start = ctx.clock()
    try:
        ctx.hooks.before_sync(command, user, settings)
        result, full = session()
    except DsyncError as exc:
        failed = SyncResult(exit_code=exc.exit_code, errors=[str(exc)])
        ctx.hooks.after_sync(command, user, settings, failed, ctx.clock() - start)
        raise
    ctx.hooks.after_sync(command, user, settings, result, ctx.clock() - start)
    if result.exit_code == ExitCode.OK:
        ctx.hooks.kick(user, settings, ctx.log_for(f"{command}({user.user})"))
    return result, full


def purge_after(
    ctx: Context, storage: Storage, user: UserEnv, settings: Mapping[str, str], result: SyncResult
) -> None:
    """`-P`: purge the destination store through the hook after a run that did not fail."""
    if result.exit_code in PURGE_AFTER:
        ctx.hooks.purge(storage, user, settings, ctx.log_for(f"dsync({user.user})"))


class PurgeWatch:
    """A slave-side `Channel` that takes the master's purge request out of its `H`, so
    the CLI purges through the hook after the session instead of the brain."""

    def __init__(self, inner: Channel) -> None:
        self._inner = inner
        self.purge_requested = False

    @property
    def peer_minor_version(self) -> int:
        return self._inner.peer_minor_version

    def send(self, item: Item) -> None:
        self._inner.send(item)

    def recv(self) -> Item:
        item = self._inner.recv()
        if isinstance(item, Handshake) and item.purge_remote:
            self.purge_requested = True
            return replace(item, purge_remote=False)
        return item

    def flush(self) -> None:
        self._inner.flush()

    def close(self, *, send_done: bool) -> None:
        self._inner.close(send_done=send_done)
