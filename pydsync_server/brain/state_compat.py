"""`-s` states that both doveadm and pydsync can be handed safely.

A state's modseqs count one implementation's change log: Dovecot's index for doveadm,
pydsync's tracker for pydsync. Reading the other's numbers as one's own could skip
changes. So a state pydsync prints carries modseq 0 in the records Dovecot reads
(Dovecot then scans its whole log: slower, never wrong, §3.3), and pydsync's own
modseqs in a shadow record per mailbox, keyed by the mailbox GUID with every byte
inverted: a mailbox that exists nowhere, which Dovecot carries along and then drops.
A state without pydsync's header mark keeps its UIDs; its modseqs are not used.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from ..protocol.items import MailboxState
from ..protocol.state import PYDSYNC_HEADER, decode_state, encode_state, written_by_pydsync


def shadow_guid(guid_hex: str) -> str:
    return bytes(b ^ 0xFF for b in bytes.fromhex(guid_hex)).hex()


def export_states(states: Iterable[MailboxState]) -> str:
    records: list[MailboxState] = []
    for state in states:
        records.append(replace(state, last_common_modseq=0, last_common_pvt_modseq=0))
        records.append(replace(state, mailbox_guid=shadow_guid(state.mailbox_guid)))
    return encode_state(records, header=PYDSYNC_HEADER)


def import_states(text: str) -> list[MailboxState]:
    """Raises InvalidStateError like decode_state."""
    records = decode_state(text)
    if not written_by_pydsync(text):
        return [replace(s, last_common_modseq=0, last_common_pvt_modseq=0) for s in records]
    by_guid = {s.mailbox_guid: s for s in records}
    states = []
    for state in records:
        shadow = by_guid.get(shadow_guid(state.mailbox_guid))
        if shadow is None:
            continue  # a shadow itself (or a record without one: not ours to trust)
        states.append(
            replace(
                state,
                last_common_modseq=shadow.last_common_modseq,
                last_common_pvt_modseq=shadow.last_common_pvt_modseq,
            )
        )
    return states
