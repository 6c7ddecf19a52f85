"""Scenario operations (doveadm-style words) -> the doveadm commands that perform them.

Operations are always done by real doveadm, whatever implementation is under test, so
the changes each side's dsync finds are the ones Dovecot itself writes.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

# name -> (minimum operands, help text)
_GRAMMAR = {
    "create": (1, "create [-s] NAME..."),
    "rename": (2, "rename OLD NEW"),
    "delete": (1, "delete [-r] NAME..."),
    "subscribe": (1, "subscribe NAME..."),
    "unsubscribe": (1, "unsubscribe NAME..."),
    "save": (2, "save MAILBOX SUBJECT..."),
    "flags": (4, "flags add|remove|replace MAILBOX UID FLAG..."),
    "expunge": (2, "expunge MAILBOX UID..."),
}
_FLAG_ACTIONS = ("add", "remove", "replace")


class OperationError(ValueError):
    """An operation that does not follow the grammar above."""


def split_words(text: str) -> list[str]:
    """Shell-like words with quotes, but a backslash is literal (``\\Seen`` stays)."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.escape = ""
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError as exc:
        raise OperationError(f"{text!r}: {exc}") from None


def message_body(subject: str) -> bytes:
    """The bytes saved for a subject: unique per subject, LF line ends as Dovecot stores them."""
    text = f"Subject: {subject}\nMessage-ID: <{subject}@conformance.invalid>\n\n{subject}\n"
    return text.encode()


@dataclass(frozen=True)
class Operation:
    words: tuple[str, ...]

    def __str__(self) -> str:
        return shlex.join(self.words)

    @property
    def saves(self) -> tuple[str, ...]:
        """Subjects of the messages this operation saves."""
        return self.words[2:] if self.words[0] == "save" else ()

    def doveadm_calls(self) -> list[tuple[list[str], bytes | None]]:
        """(doveadm arguments after the global options, standard input) per command."""
        name, *rest = self.words
        if name in ("create", "rename", "delete", "subscribe", "unsubscribe"):
            return [(["mailbox", name, *rest], None)]
        if name == "save":
            mailbox, *subjects = rest
            return [(["save", "-m", mailbox], message_body(s)) for s in subjects]
        if name == "flags":
            action, mailbox, uid, *flags = rest
            return [(["flags", action, " ".join(flags), "mailbox", mailbox, "uid", uid], None)]
        mailbox, *uids = rest  # expunge
        return [(["expunge", "mailbox", mailbox, "uid", ",".join(uids)], None)]


def parse_operation(text: str) -> Operation:
    words = split_words(text)
    if not words or words[0] not in _GRAMMAR:
        raise OperationError(f"unknown operation {text!r}; known: {', '.join(_GRAMMAR)}")
    minimum, usage = _GRAMMAR[words[0]]
    operands = [w for w in words[1:] if w not in ("-s", "-r")]
    if len(operands) < minimum:
        raise OperationError(f"{text!r}: usage: {usage}")
    if words[0] == "rename" and len(words) != 3:
        raise OperationError(f"{text!r}: usage: {usage}")
    if words[0] == "flags" and words[1] not in _FLAG_ACTIONS:
        raise OperationError(f"{text!r}: usage: {usage}")
    uids = words[3:4] if words[0] == "flags" else words[2:] if words[0] == "expunge" else []
    if not all(u.isdigit() for u in uids):
        raise OperationError(f"{text!r}: UIDs must be numbers")
    return Operation(tuple(words))
