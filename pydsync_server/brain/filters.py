"""Import filters -t, -e, -I, -O: which of the peer's new mails this side wants (§7.1).

Only new mails are filtered; existing ones still get flag and expunge sync.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.items import MailChange

_SYSTEM_FLAGS = {
    "\\answered": 0x01,
    "\\flagged": 0x02,
    "\\deleted": 0x04,
    "\\seen": 0x08,
    "\\draft": 0x10,
    "\\recent": 0x20,
}


@dataclass  # not frozen: never changed or hashed; frozen doubles its start-up cost
class ImportFilter:
    since: int = 0
    until: int = 0
    max_size: int = 0
    flag: str | None = None  # "-" prefix = only mails without it

    def wants(self, change: MailChange) -> bool:
        if change.type != "s":
            return True
        if self.since and change.received_timestamp < self.since:
            return False
        if self.until and change.received_timestamp > self.until:
            return False
        if self.max_size and (change.virtual_size or 0) > self.max_size:
            return False
        return self.flag is None or self._flag_matches(change)

    def _flag_matches(self, change: MailChange) -> bool:
        assert self.flag is not None
        negate = self.flag.startswith("-")
        name = self.flag[1:] if negate else self.flag
        bit = _SYSTEM_FLAGS.get(name.lower())
        if bit is not None:
            present = bool(change.final_flags & bit)
        else:
            present = any(
                op[0] in "=&" and op[1:].lower() == name.lower() for op in change.keyword_changes
            )
        return present != negate


def valid_flag_filter(flag: str) -> bool:
    name = flag[1:] if flag.startswith("-") else flag
    return not name.startswith("\\") or name.lower() in _SYSTEM_FLAGS
