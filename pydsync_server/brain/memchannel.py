"""Two brains in one process: a pair of channels passing items as objects.

Used for local destinations (`pydsync backup maildir:/path`) and in tests. Sends never
block (unbounded queues); bodies travel as the sender's lazily opened files.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field

from ..errors import IOStalledError, PeerClosedError
from ..protocol.channel import PROTOCOL_MINOR
from ..protocol.items import Done, Item

_CLOSED = object()


@dataclass(eq=False)  # a channel is itself only (a generated __eq__ costs start-up time)
class MemoryChannel:
    inbox: queue.Queue[object] = field(default_factory=queue.Queue)
    outbox: queue.Queue[object] = field(default_factory=queue.Queue)
    timeout: float | None = None
    name: str = "local"

    @property
    def peer_minor_version(self) -> int:
        return PROTOCOL_MINOR

    def send(self, item: Item) -> None:
        self.outbox.put(item)

    def recv(self) -> Item:
        try:
            item = self.inbox.get(timeout=self.timeout)
        except queue.Empty as exc:
            raise IOStalledError(
                f"dsync({self.name}): I/O has stalled, no activity for {self.timeout} seconds"
            ) from exc
        if item is _CLOSED:
            self.inbox.put(_CLOSED)
            raise PeerClosedError(f"read({self.name}) failed: EOF")
        return item  # type: ignore[return-value]

    def flush(self) -> None:
        return None

    def close(self, *, send_done: bool) -> None:
        if send_done:
            self.outbox.put(Done())
        self.outbox.put(_CLOSED)


def channel_pair(timeout: float | None = None) -> tuple[MemoryChannel, MemoryChannel]:
    a_to_b: queue.Queue[object] = queue.Queue()
    b_to_a: queue.Queue[object] = queue.Queue()
    return (
        MemoryChannel(inbox=b_to_a, outbox=a_to_b, timeout=timeout, name="slave"),
        MemoryChannel(inbox=a_to_b, outbox=b_to_a, timeout=timeout, name="master"),
    )
