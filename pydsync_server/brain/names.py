"""Turn a remote mailbox name into one this storage can hold (dsync-algorithm.md §2.4).

Dovecot's `dsync_fix_mailbox_name`: control characters and invalid UTF-8 become
alt_char; a level the storage still refuses is tried with the storage's own list
separator replaced, then with `_` in front; a name that cannot be fixed becomes a
random GUID. Both trees then use the fixed name, so the next run agrees with itself.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import InvalidMailboxNameError
from ..storage.base import Storage

Name = tuple[str, ...]


def clean_level(level: str, separator: str, alt_char: str) -> str:
    def fixed(char: str) -> str:
        if char == separator or ord(char) < 0x20 or 0xDC80 <= ord(char) <= 0xDCFF:
            return alt_char
        return char

    return "".join(fixed(char) for char in level)


def name_fixer(storage: Storage, alt_char: str) -> Callable[[Name], Name]:
    sep = storage.separator

    def valid(levels: list[str]) -> bool:
        try:
            storage.check_name(sep.join(levels))
        except InvalidMailboxNameError:
            return False
        return True

    def candidates(level: str) -> list[str]:
        options = [level]
        if storage.list_separator != sep:
            options.append(level.replace(storage.list_separator, alt_char))
        options += ["_" + option for option in list(options)]
        return options

    def fix(name: Name) -> Name:
        levels = [clean_level(level, sep, alt_char) for level in name]
        if valid(levels):
            return tuple(levels)
        fixed: list[str] = []
        for level in levels:
            choice = next((c for c in candidates(level) if valid([*fixed, c])), None)
            if choice is None:
                import secrets  # only for a name nothing fixes: not paid for at start-up

                return (secrets.token_hex(16),)
            fixed.append(choice)
        return tuple(fixed)

    return fix
