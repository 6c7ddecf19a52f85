"""What a userdb answers (`UserRecord`) and the small helpers userdb plugins share:
`%` templates, Dovecot's `*`/`?` user masks and space/comma separated lists.

A record's fields become settings for that user as Dovecot's userdb fields do: `mail`
is the 2.3 `mail_location`, uid/gid are `mail_uid`/`mail_gid`, and every other extra
field overrides the setting of the same name (e.g. `mail_replica`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..storage.location import UserEnv, expand_vars


@dataclass  # not frozen (twice the start-up cost): never changed; unhashable anyway (dicts)
class UserRecord:
    """One user as a userdb knows it. None = the userdb did not say."""

    user: str
    home: str | None = None
    mail: str | None = None
    uid: int | None = None
    gid: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def settings(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` with this user's fields on top (userdb fields win, as in Dovecot)."""
        merged = dict(base)
        if self.mail:
            # A userdb `mail` is a whole 2.3 location: 2.4 driver settings must not win.
            merged["mail_location"] = self.mail
            merged.pop("mail_driver", None)
        if self.uid is not None:
            merged["mail_uid"] = str(self.uid)
        if self.gid is not None:
            merged["mail_gid"] = str(self.gid)
        merged.update(self.extra)
        return merged


def expand_user(template: str, user: str, home: str | None = None) -> str:
    """Expand `%u %n %d %%` (and `%h` when `home` is known) for `user`."""
    return expand_vars(template, UserEnv(user, home))


def split_list(value: str) -> list[str]:
    """`a b,c` -> ["a", "b", "c"] (Dovecot's list settings take spaces or commas)."""
    return [item for item in re.split(r"[\s,]+", value) if item]


def is_mask(user: str) -> bool:
    return "*" in user or "?" in user


def mask_match(mask: str, name: str) -> bool:
    """Dovecot's wildcard_match(): `*` any run of characters, `?` exactly one."""
    pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in mask)
    return re.fullmatch(pattern, name, re.DOTALL) is not None
