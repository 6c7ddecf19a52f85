"""What a brain tells an observer while it syncs mail: each mailbox begun and ended,
how many bodies it will send and receive, and each body as it moves (with its size).

The CLI turns these into `-v` progress and the `--json` report; the brain itself never
prints. Writes to the local store are observed one layer down (storage/observed.py).
Observers are optional: a brain without one does no extra work per message.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import BinaryIO, Protocol, cast

from ..protocol.items import Mail


class SyncObserver(Protocol):
    """Called from the brain's thread; in a local run a body is read (and so reported
    as sent) by the other brain's thread, so implementations must be thread-safe."""

    def mailbox_begin(self, vname: str, guid: str) -> None:
        """The per-mailbox exchange of `vname` starts (both `B` records agreed on it)."""

    def transfer_planned(self, vname: str, *, outgoing: bool, count: int) -> None:
        """`count` bodies will go to the peer (`outgoing`) or come from it."""

    def mail_sent(self, vname: str, size: int) -> None:
        """A body of `size` bytes went to the peer (reported once it was read)."""

    def mail_received(self, vname: str, size: int) -> None:
        """A body of `size` bytes came from the peer and was handed to the importer."""

    def mailbox_end(self, vname: str) -> None:
        """The exchange of `vname` ended (states swapped), successfully or not."""


class CountingBody(io.RawIOBase):
    """A body that calls `done(bytes read)` once: at its first EOF, or when closed."""

    def __init__(self, inner: BinaryIO, done: Callable[[int], None]) -> None:
        super().__init__()
        self._inner = inner
        self._done: Callable[[int], None] | None = done
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._inner.read(-1 if size is None else size)
        self.count += len(data)
        if not data and size != 0:
            self._report()
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._report()
            self._inner.close()
        super().close()

    def _report(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done(self.count)


def observe_sent(
    observer: SyncObserver, vname: str, mails: Iterable[Mail], planned: int | None
) -> Iterator[Mail]:
    """`mails` with bodies that report themselves sent; announces the planned count
    (`None`: count the mails first)."""
    if planned is None:
        mails = list(mails)
        planned = sum(1 for mail in mails if mail.body is not None)
    observer.transfer_planned(vname, outgoing=True, count=planned)
    for mail in mails:
        if mail.body is None:
            yield mail
            continue

        def sent(size: int) -> None:
            observer.mail_sent(vname, size)

        yield replace(mail, body=cast(BinaryIO, CountingBody(mail.body, sent)))


def observe_received(observer: SyncObserver, vname: str, mails: Iterable[Mail]) -> Iterator[Mail]:
    """`mails` with bodies that report themselves received once the importer is done."""
    for mail in mails:
        if mail.body is None:
            yield mail
            continue

        def received(size: int) -> None:
            observer.mail_received(vname, size)

        yield replace(mail, body=cast(BinaryIO, CountingBody(mail.body, received)))
