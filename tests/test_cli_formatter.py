"""doveadm's output formatters, against bytes doveadm 2.3.19 printed.

Each expected value below was captured from `doveadm -f <fmt> fetch ...` or
`doveadm -f <fmt> mailbox ...` on small stores (see cli/formatter.py for the rules).
Two messages are used: uid 4 = "Subject: crlf\\nX-Empty:\\n\\nbody\\n", uid 5 =
"Subject: nonl\\n\\nno newline at end".
"""

from __future__ import annotations

import io

import pytest

from pydsync_server.cli.formatter import STREAM_CHUNK, Header, chunked, make_formatter
from pydsync_server.errors import UsageError

MSG4 = (b"Subject: crlf\nX-Empty:\n\n", b"body\n")
MSG5 = (b"Subject: nonl\n\n", b"no newline at end")

# field -> per message value: str = plain, bytes = stream
ROWS = {
    "uid": ["4", "5"],
    "hdr.subject": ["crlf", "nonl"],
    "body": [MSG4[1], MSG5[1]],
    "text": [b"".join(MSG4), b"".join(MSG5)],
}


def render(fmt: str, fields: list[str], rows: dict[str, list[str | bytes]] = ROWS) -> bytes:
    out = io.BytesIO()
    formatter = make_formatter(fmt, out, [Header(f) for f in fields])
    for i in range(len(rows[fields[0]])):
        for field in fields:
            value = rows[field][i]
            if isinstance(value, bytes):
                formatter.stream(chunked(value))
            else:
                formatter.value(value)
    formatter.finish()
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "fields", "expected"),
    [
        ("pager", ["uid", "body"], b"uid: 4\nbody:\nbody\n\f\nuid: 5\nbody:\nno newline at end"),
        (
            "pager",
            ["body", "uid", "hdr.subject"],
            b"body:\nbody\nuid: 4\nhdr.subject: crlf\n"
            b"body:\nno newline at enduid: 5\nhdr.subject: nonl\n",
        ),
        (
            "pager",
            ["text"],
            b"text:\nSubject: crlf\nX-Empty:\n\nbody\ntext:\nSubject: nonl\n\nno newline at end",
        ),
        (
            "pager",
            ["uid", "hdr.subject"],
            b"uid: 4\nhdr.subject: crlf\n\f\nuid: 5\nhdr.subject: nonl\n",
        ),
        ("flow", ["uid", "body"], b"uid=4 body=body\n\nuid=5 body=no newline at end\n"),
        (
            "flow",
            ["body", "uid", "hdr.subject"],
            b"body=body\n uid=4 hdr.subject=crlf\nbody=no newline at end uid=5 hdr.subject=nonl\n",
        ),
        (
            "flow",
            ["text"],
            b"text=Subject: crlf\nX-Empty:\n\nbody\n\ntext=Subject: nonl\n\nno newline at end\n",
        ),
        ("tab", ["uid", "body"], b"uid\tbody\n4\tbody\n\t\n5\tno newline at end\t\n"),
        (
            "tab",
            ["body", "uid", "hdr.subject"],
            b"body\tuid\thdr.subject\nbody\n\t4\tcrlf\nno newline at end\t5\tnonl\n",
        ),
        (
            "tab",
            ["text"],
            b"text\nSubject: crlf\nX-Empty:\n\nbody\n\nSubject: nonl\n\nno newline at end\n",
        ),
        ("tab", ["uid", "hdr.subject"], b"uid\thdr.subject\n4\tcrlf\n5\tnonl\n"),
    ],
)
def test_fetch_layouts(fmt: str, fields: list[str], expected: bytes) -> None:
    assert render(fmt, fields) == expected


def test_empty_values_and_multiline_plain_values() -> None:
    rows: dict[str, list[str | bytes]] = {
        "uid": ["1", "2"],
        "hdr.x-multi": ["a\n b", ""],
        "body": [b"", b""],
        "hdr.x-missing": ["", ""],
    }
    fields = list(rows)
    assert render("tab", fields, rows) == (
        b"uid\thdr.x-multi\tbody\thdr.x-missing\n1\ta\n b\t\t\n2\t\t\t\n"
    )
    assert render("pager", fields, rows) == (
        b"uid: 1\nhdr.x-multi: a\n b\nbody:\nhdr.x-missing: \n"
        b"\f\nuid: 2\nhdr.x-multi: \nbody:\nhdr.x-missing: \n"
    )
    assert render("flow", fields, rows) == (
        b"uid=1 hdr.x-multi=a\n b body= hdr.x-missing=\nuid=2 hdr.x-multi= body= hdr.x-missing=\n"
    )


def test_tab_prints_a_tab_before_every_stream_chunk() -> None:
    body = bytes(range(48, 58)) * 2000  # 20000 bytes: chunks of 8192, 8192, 3616
    rows: dict[str, list[str | bytes]] = {"uid": ["3"], "body": [body]}
    c = STREAM_CHUNK
    expected = (
        b"uid\tbody\n3\t" + body[:c] + b"\t" + body[c : 2 * c] + b"\t" + body[2 * c :] + b"\t\n"
    )
    assert render("tab", ["uid", "body"], rows) == expected
    assert render("pager", ["uid", "body"], rows) == b"uid: 3\nbody:\n" + body


def test_a_body_stream_starts_with_the_rest_of_the_header_block() -> None:
    """doveadm 2.3.19 on a fresh index: a 28-byte header, then body pieces of
    8164, 8192, 8192, ... bytes (the file is read in 8 KiB blocks)."""
    body = b"x" * 20000
    assert [len(p) for p in chunked(body, offset=28)] == [8164, 8192, 3644]
    assert [len(p) for p in chunked(body, offset=8192 + 10)] == [8182, 8192, 3626]
    assert chunked(b"", offset=28) == []


def test_json_escaping() -> None:
    subject = '=?utf-8?q?x?= \u00e9 \x01 "q" \\ \x7f / \udcff'  # \udcff: the raw byte 0xff
    rows: dict[str, list[str | bytes]] = {
        "uid": ["4"],
        "hdr.subject": [subject],
        "body": [b"body\ttab\n"],
    }
    assert render("json", ["uid", "hdr.subject", "body"], rows) == (
        b'[{"uid":"4","hdr.subject":"=?utf-8?q?x?= \xc3\xa9 \\u0001 \\"q\\" \\\\ \x7f / '
        b'\xef\xbf\xbd","body":"body\\ttab\\n"}]'
    )


def test_hidden_title_header() -> None:
    names: dict[str, list[str | bytes]] = {"mailbox": ["Work", "Work/Projects", "INBOX"]}
    out = {fmt: io.BytesIO() for fmt in ("flow", "pager", "tab", "json")}
    for fmt, stream in out.items():
        formatter = make_formatter(fmt, stream, [Header("mailbox", hide_title=True)])
        for name in names["mailbox"]:
            formatter.value(str(name))
        formatter.finish()
    assert out["flow"].getvalue() == b"Work\nWork/Projects\nINBOX\n"
    assert out["pager"].getvalue() == b"Work\n\f\nWork/Projects\n\f\nINBOX\n"
    assert out["tab"].getvalue() == b"mailbox\nWork\nWork/Projects\nINBOX\n"
    assert out["json"].getvalue() == (
        b'[{"mailbox":"Work"},{"mailbox":"Work/Projects"},{"mailbox":"INBOX"}]'
    )


def test_status_layout_with_hidden_mailbox_column() -> None:
    headers = [Header("mailbox", hide_title=True), Header("messages")]
    pager, flow = io.BytesIO(), io.BytesIO()
    for stream, fmt in ((pager, "pager"), (flow, "flow")):
        formatter = make_formatter(fmt, stream, headers)
        for name, count in (("Work", "1"), ("INBOX", "3")):
            formatter.value(name)
            formatter.value(count)
    assert pager.getvalue() == b"Work\nmessages: 1\n\f\nINBOX\nmessages: 3\n"
    assert flow.getvalue() == b"Work messages=1\nINBOX messages=3\n"


@pytest.mark.parametrize(
    ("fmt", "expected"), [("flow", b""), ("pager", b""), ("tab", b"uid\n"), ("json", b"[]")]
)
def test_no_records(fmt: str, expected: bytes) -> None:
    out = io.BytesIO()
    make_formatter(fmt, out, [Header("uid")]).finish()
    assert out.getvalue() == expected


def test_unknown_formatter() -> None:
    with pytest.raises(UsageError, match="Unknown formatter: table"):
        make_formatter("table", io.BytesIO(), [Header("uid")])
