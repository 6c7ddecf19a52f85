"""`,S=`/`,W=` in a maildir base name read as Dovecot reads them
(maildir_filename_get_size): the regular expression here is the reference."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from pydsync_server.storage.maildir_uidlist import size_from_base


def _reference(base: str, key: str) -> int | None:
    match = re.search(rf",{key}=([0-9]*)(?=[,:]|\Z)", base)
    return int(match.group(1) or 0) if match is not None else None


@given(st.text(alphabet=",SW=0123456789:x.M", max_size=24), st.sampled_from("SW"))
def test_size_tag_matches_the_reference(base: str, key: str) -> None:
    assert size_from_base(base, key) == _reference(base, key)


def test_examples() -> None:
    base = "1672541570.M108165P1001.bench,S=6835,W=6967"
    assert (size_from_base(base, "S"), size_from_base(base, "W")) == (6835, 6967)
    assert size_from_base("x,S=12a,S=7:2,S", "S") == 7
    assert size_from_base("x,W=5", "S") is None
