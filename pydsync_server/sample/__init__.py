"""Bundled sample mail and `materialise()`, which writes it as a new Maildir.

The .eml files are package data; they are copied (through the storage API, so the
result is a store pydsync and Dovecot both read) and never modified in place.
"""

from __future__ import annotations

import email.utils
import io
import os
import socket
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..storage.base import NewMessage, Storage
from ..storage.location import MailLocation, open_storage

SEEN, ANSWERED, FLAGGED = 0x08, 0x01, 0x02


@dataclass(frozen=True)
class SampleMessage:
    mailbox: str
    file: str
    flags: int = 0
    keywords: frozenset[str] = frozenset()


SAMPLE = (
    SampleMessage("INBOX", "01-welcome.eml", SEEN),
    SampleMessage("INBOX", "02-meeting.eml", SEEN | ANSWERED | FLAGGED, frozenset({"todo"})),
    SampleMessage("INBOX", "03-report.eml"),
    SampleMessage("Work", "04-project.eml", SEEN),
    SampleMessage("Archive/2023", "05-archived.eml", SEEN),
)
SUBSCRIBED = ("INBOX", "Work", "Archive/2023")


def message_bytes(name: str) -> bytes:
    return resources.files(__package__).joinpath("mail", name).read_bytes()


def _received(body: bytes) -> int:
    """The Date: header as the received date, so every run writes the same store."""
    for line in body.split(b"\n"):
        if line.lower().startswith(b"date:"):
            parsed = email.utils.parsedate_tz(line[5:].decode().strip())
            if parsed is not None:
                return int(email.utils.mktime_tz(parsed))
    return int(time.time())


def fill(storage: Storage) -> None:
    """Create the sample mailboxes, messages and subscriptions in `storage`."""
    existing = {entry.vname for entry in storage.list_mailboxes()}
    for vname in dict.fromkeys(m.mailbox for m in SAMPLE):
        if vname not in existing:
            storage.create_mailbox(vname)
    for sample in SAMPLE:
        body = message_bytes(sample.file)
        box = storage.open_mailbox(sample.mailbox)
        try:
            uid = box.status().uid_next
            with box.transaction() as tx:
                tx.save(
                    NewMessage(
                        uid=uid,
                        guid=uuid.uuid4().hex,
                        body=io.BytesIO(body),
                        flags=sample.flags,
                        keywords=sample.keywords,
                        received_date=_received(body),
                        saved_date=0,  # the file's ctime, as Dovecot reads it
                    )
                )
        finally:
            box.close()
    for vname in SUBSCRIBED:
        storage.set_subscribed(vname, True)
    mark_seen_by_a_session(storage)


def mark_seen_by_a_session(storage: Storage) -> None:
    """No message is \\Recent: Dovecot finds these files in cur/, which it never
    reports as recent, so both tools then print the same flags."""
    for entry in storage.list_mailboxes():
        if entry.guid is None:
            continue
        box = storage.open_mailbox(entry.vname)
        try:
            with box.transaction() as tx:
                tx.raise_first_recent_uid(box.status().uid_next)
        finally:
            box.close()


def materialise(home: str | os.PathLike[str]) -> Path:
    """Write the sample as `<home>/Maildir` (which must not exist yet); returns it."""
    root = Path(home).resolve() / "Maildir"
    if root.exists():
        raise FileExistsError(f"{root} already exists: choose a new directory")
    storage = open_storage(
        MailLocation("maildir", str(root)), clock=time.time, hostname=socket.gethostname()
    )
    try:
        fill(storage)
    finally:
        storage.close()
    return root
