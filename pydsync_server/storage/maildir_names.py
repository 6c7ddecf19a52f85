"""Mailbox names of a maildir store: vname checks, mUTF-7, and the on-disk layouts.

vnames use "/" as separator; on disk each level is mUTF-7 (RFC 3501 §5.1.3) unless
the store uses UTF-8 names, and levels are joined by "." under a leading "."
(Maildir++) or by "/" (LAYOUT=fs). INBOX is the root (storage-formats.md §1.1).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidMailboxNameError

MAILDIRPLUSPLUS = "maildir++"
LAYOUT_FS = "fs"
SEP = "/"
NAME_MAX = 255  # bytes of one directory entry
# Maildir's own directory names; "cur"/"new"/"tmp" cannot be mailbox names
# (mailbox_list_is_valid_fs_name: "Contains reserved name").
INTERNAL_NAMES = frozenset({"cur", "new", "tmp"})
TRASH_DIR_NAME = "..DOVECOT-TRASHED"


# -- modified UTF-7 ------------------------------------------------------------


def _b64_encode(run: str) -> str:
    raw = base64.b64encode(run.encode("utf-16-be")).decode("ascii")
    return "&" + raw.rstrip("=").replace("/", ",") + "-"


def mutf7_encode(text: str) -> str:
    """RFC 3501 modified UTF-7: printable ASCII as is, "&" as "&-", the rest base64."""
    out: list[str] = []
    run: list[str] = []
    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E:
            if run:
                out.append(_b64_encode("".join(run)))
                run = []
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    if run:
        out.append(_b64_encode("".join(run)))
    return "".join(out)


def _b64_decode(chunk: str) -> str:
    if not chunk or any(not (c.isalnum() or c in "+,") or not c.isascii() for c in chunk):
        raise ValueError("bad base64 in mUTF-7")
    raw = base64.b64decode(chunk.replace(",", "/") + "=" * (-len(chunk) % 4))
    if len(raw) % 2:
        raise ValueError("odd UTF-16 length in mUTF-7")
    text = raw.decode("utf-16-be")  # rejects lone surrogates
    if any(0x20 <= ord(c) <= 0x7E for c in text):
        raise ValueError("printable ASCII encoded in mUTF-7")
    return text


def mutf7_decode(text: str) -> str:
    """Strict inverse of `mutf7_encode`; ValueError for anything it would not produce."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if not 0x20 <= ord(ch) <= 0x7E:
            raise ValueError("raw non-ASCII in mUTF-7")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated mUTF-7 shift")
        out.append("&" if end == i + 1 else _b64_decode(text[i + 1 : end]))
        i = end + 1
    result = "".join(out)
    if mutf7_encode(result) != text:
        raise ValueError("non-canonical mUTF-7")
    return result


# -- vname checks ----------------------------------------------------------------


def split_vname(vname: str, layout: str) -> list[str]:
    """Validate a vname and return its levels ("inbox" is normalised to "INBOX").

    Refuses what Dovecot refuses (mailbox_verify_name, mailbox_list_is_valid_fs_name)
    plus anything that could leave the mail root.
    """
    if not vname:
        raise InvalidMailboxNameError("Invalid mailbox name: Name is empty")
    try:
        vname.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMailboxNameError("Invalid mailbox name: not valid UTF-8") from None
    levels = vname.split(SEP)
    if levels[0].upper() == "INBOX":
        levels[0] = "INBOX"
    for level in levels:
        _check_level(level, layout)
    if levels[0].startswith("~"):
        raise InvalidMailboxNameError("Invalid mailbox name: Begins with '~'")
    if levels[0] in INTERNAL_NAMES or (
        layout == LAYOUT_FS and any(level in INTERNAL_NAMES for level in levels)
    ):
        raise InvalidMailboxNameError("Invalid mailbox name: Contains reserved name")
    return levels


def _check_level(level: str, layout: str) -> None:
    if level == "":
        raise InvalidMailboxNameError("Invalid mailbox name: Has adjacent or edge separators")
    if level in (".", ".."):
        raise InvalidMailboxNameError(f"Invalid mailbox name: Contains '{level}' part")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in level):
        raise InvalidMailboxNameError("Control characters not allowed in mailbox names")
    if layout == MAILDIRPLUSPLUS and "." in level:
        raise InvalidMailboxNameError("Character not allowed in mailbox name: '.'")
    if layout == LAYOUT_FS and level.startswith("."):
        # fs listing skips dot entries, so such a mailbox could never be listed
        raise InvalidMailboxNameError("Invalid mailbox name: level begins with '.'")


def normalize_vname(vname: str, layout: str) -> str:
    return SEP.join(split_vname(vname, layout))


# -- layout ----------------------------------------------------------------------


@dataclass(frozen=True)
class MaildirLayout:
    """Maps vnames to directories under a root (mail, control or index tree)."""

    layout: str = MAILDIRPLUSPLUS
    utf8_names: bool = False

    @property
    def list_sep(self) -> str:
        return "." if self.layout == MAILDIRPLUSPLUS else "/"

    def level_to_disk(self, level: str) -> str:
        return level if self.utf8_names else mutf7_encode(level)

    def level_from_disk(self, name: str) -> str:
        """ValueError if the on-disk level is not a valid encoded name."""
        if self.utf8_names:
            name.encode("utf-8")  # surrogate-escaped bytes raise UnicodeEncodeError
            return name
        return mutf7_decode(name)

    def normalize(self, vname: str) -> str:
        """The canonical vname; InvalidMailboxNameError when it cannot be stored."""
        vname = normalize_vname(vname, self.layout)
        if vname != "INBOX":
            self.storage_levels(vname)
        return vname

    def storage_levels(self, vname: str) -> list[str]:
        """On-disk levels of a (valid, non-INBOX) vname."""
        disk = [self.level_to_disk(level) for level in split_vname(vname, self.layout)]
        for level in disk:
            if len(level.encode("utf-8")) > NAME_MAX - 1:
                raise InvalidMailboxNameError("Mailbox name too long")
        if self.layout == MAILDIRPLUSPLUS and len(".".join(disk).encode()) > NAME_MAX - 1:
            raise InvalidMailboxNameError("Mailbox name too long")
        return disk

    def path(self, root: Path, vname: str, *, inbox_is_root: bool = True) -> Path:
        """The directory of `vname` under `root`. INBOX is the mail root itself; in a
        separate CONTROL=/INDEX= tree it is named like any folder (observed:
        `control/.INBOX/dovecot-uidlist`, `index/INBOX/` with LAYOUT=fs)."""
        if vname == "INBOX" and inbox_is_root:
            return root
        levels = ["INBOX"] if vname == "INBOX" else self.storage_levels(vname)
        if self.layout == MAILDIRPLUSPLUS:
            return root / ("." + ".".join(levels))
        return root.joinpath(*levels)

    def vname_from_storage(self, levels: list[str]) -> str | None:
        """vname of on-disk levels, None when they are not a valid name."""
        try:
            names = [self.level_from_disk(level) for level in levels]
            return normalize_vname(SEP.join(names), self.layout)
        except (ValueError, InvalidMailboxNameError):
            return None

    def scan(self, root: Path) -> dict[str, bool]:
        """Every mailbox/directory found on disk: vname -> selectable (INBOX excluded)."""
        found: dict[str, bool] = {}
        if self.layout == MAILDIRPLUSPLUS:
            self._scan_plusplus(root, found)
        else:
            self._scan_fs(root, [], found)
        found.pop("INBOX", None)
        return found

    def _scan_plusplus(self, root: Path, found: dict[str, bool]) -> None:
        try:
            entries = list(os.scandir(root))
        except FileNotFoundError:
            return
        for entry in entries:
            if not entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            vname = self.vname_from_storage(entry.name[1:].split("."))
            if vname is not None:
                found[vname] = True

    def _scan_fs(self, directory: Path, parents: list[str], found: dict[str, bool]) -> None:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            if name in INTERNAL_NAMES:
                continue
            vname = self.vname_from_storage([*parents, name])
            if vname is None:
                continue
            found[vname] = os.path.isdir(os.path.join(entry.path, "cur"))
            self._scan_fs(Path(entry.path), [*parents, name], found)

    # -- subscriptions file names (storage-formats.md §7.6) --

    def subscription_levels(self, vname: str) -> list[str]:
        return ["INBOX"] if vname == "INBOX" else self.storage_levels(vname)

    def vname_from_subscription(self, levels: list[str]) -> str | None:
        if levels == ["INBOX"]:
            return "INBOX"
        return self.vname_from_storage(levels)
