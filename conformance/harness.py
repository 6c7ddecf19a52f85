"""The Dovecot harness of the test suite (tests/dovecot.py), importable from conformance/.

tests/ is not a package (pytest puts it on sys.path); outside pytest it is added here,
so the runner and the tests share one DovecotEnv/DovecotUser/snapshot implementation.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_TESTS = str(REPO / "tests")
if _TESTS not in sys.path:
    sys.path.append(_TESTS)

from dovecot import (  # noqa: E402
    SAFE_PATH,
    DovecotEnv,
    DovecotUser,
    MailboxSnapshot,
    MessageSnapshot,
    StoreSnapshot,
    diff,
    location_options,
    normalize_for_compare,
    require_dovecot,
    snapshot,
    with_userdb_option,
)

__all__ = [
    "REPO",
    "SAFE_PATH",
    "DovecotEnv",
    "DovecotUser",
    "MailboxSnapshot",
    "MessageSnapshot",
    "StoreSnapshot",
    "diff",
    "location_options",
    "normalize_for_compare",
    "require_dovecot",
    "snapshot",
    "with_userdb_option",
]
