"""Bad input: each malformed stream fails with Dovecot's one-line message (§11.2)."""

from __future__ import annotations

import io

import pytest

from pydsync_server.errors import (
    LocalProtocolError,
    PeerClosedError,
    ProtocolError,
    RemoteProtocolError,
)
from pydsync_server.protocol.codec import NEED_DATA, Decoder, Encoder, Event
from pydsync_server.protocol.items import (
    Done,
    Handshake,
    Mail,
    Mailbox,
    MailboxAttribute,
    MailboxState,
    MailboxTreeNode,
    MailChange,
)

PREAMBLE = Encoder().preamble()
GUID = "84f4fc0efc740b6bc03f000083ecc375"


def _run(data: bytes, *, eof: bool = False, max_line_length: int = 0) -> list[Event]:
    decoder = Decoder(max_line_length)
    decoder.feed(data)
    if eof:
        decoder.feed_eof()
    events: list[Event] = []
    while (event := decoder.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, Done):
            break
    return events


def _fails(data: bytes, error: type[ProtocolError], message: str, **kwargs: object) -> None:
    with pytest.raises(error) as info:
        _run(data, **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("data", [
    b"HELLO\n",
    b"SSH-2.0-OpenSSH",  # detected before any newline arrives
    b"VERSION\tdsync\t2\t0\n",  # wrong major
    b"VERSION\tdsync\t3\n",
    b"VERSION\tdsync\t3\t5x\n",
    b"VERSION\tdoveadm-server\t1\t2\n",
])
def test_incompatible_version(data: bytes) -> None:
    _fails(data, RemoteProtocolError, "Remote dsync doesn't use compatible protocol", eof=False)


@pytest.mark.parametrize(("record", "message"), [
    (b"Q\t1\n", "Received unexpected input Q"),
    (b"c\tflags\tt\n", "Received unexpected input c"),
    (b"\n", "Received unexpected input (empty line)"),
    (b".x\n", "Received unexpected input ."),
    (b"Cs\n", "Invalid input to mail_change: Missing required field uid"),
    (b"C\x02\t1\n", "Invalid input to mail_change: Missing required field type"),
    (b"Cs\tx1\n", "mail_change: Invalid uid"),
    (b"Cs\t+1\n", "mail_change: Invalid uid"),
    (b"Cs\t4294967296\n", "mail_change: Invalid uid"),
    (b"Cx\t1\n", "mail_change: Invalid type: x"),
    (b"Cs\t1\t\x02\t\x02\t\x02\t\x02\t1ff\n", "mail_change: Invalid add_flags: 1ff"),
    (b"Cs\t1" + b"\t\x02" * 9 + b"\tzz\n", "mail_change: Invalid received_timestamp"),
    (b"Cs\t1" + b"\t\x02" * 10 + b"\t-1\n", "mail_change: Invalid virtual_size"),
    (b"Sxyz\t1\t1\t1\t1\n", "mailbox_state: Invalid mailbox_guid"),
    (b"B" + GUID[:-1].encode() + b"\t1\t1\t1\t1\t1\t1\n", "mailbox: Invalid mailbox_guid"),
    (b"B" + GUID.encode() + b"\t1\t1\t1\t1\t1\t1\t\x02\t\x02\tflags\x01tq\n",
     "mailbox: Invalid decision: q"),
    (b"B" + GUID.encode() + b"\t1\t1\t1\t1\t1\t1\t\x02\t\x02\tflags\n",
     "mailbox: cache_field: Invalid input: Missing required field decision"),
    (b"N\x02\ty\n", "Invalid input to mailbox_tree_node: Missing required field name"),
    (b"N\ty\n", "mailbox_tree_node: Empty name"),
    (b"D//\n", "mailbox_delete: Invalid hierarchy_sep"),
    (b"D/\t%\t" + GUID.encode() + b"\n", "mailbox_delete: Invalid mailboxes"),
    (b"D/\t%\t\x02\tnothex 5\n", "mailbox_delete: Invalid dirs"),
    (b"Ax\tk\n", "mailbox_attribute: Invalid type: x"),
    (b"Ferr\t1x\n", "finish: Invalid mail_error"),
    (b"H\x02\n", "Invalid input to handshake: Missing required field hostname"),
    (b"Hvm\t\x02\t\x02\t\x02\tx\n", "handshake: Unknown sync_type: x"),
    (b"Hvm\t\x02\t\x02\tnot-a-guid\n", "handshake: Invalid sync_box_guid: not-a-guid"),
    (b"Hvm" + b"\t\x02" * 10 + b"\t0\n", "handshake: Invalid lock_timeout: 0"),
])
def test_bad_record(record: bytes, message: str) -> None:
    _fails(PREAMBLE + record, RemoteProtocolError, message)


def test_header_missing_required_key() -> None:
    header = PREAMBLE.replace(b"Ctype\tuid\t", b"Ctype\t")
    _fails(header, RemoteProtocolError,
           "Remote sent invalid handshake for mail_change: Header missing required field uid")


@pytest.mark.parametrize(("minor", "dropped", "message"), [
    (5, b"B", "Remote didn't handshake deserializer for mailbox"),
    (1, b"A", "Remote didn't handshake deserializer for mailbox_attribute"),
    (3, b"F", "Remote didn't handshake deserializer for finish"),
    (0, b"c", "Remote didn't handshake deserializer for mailbox_cache_field"),
])
def test_header_missing_item(minor: int, dropped: bytes, message: str) -> None:
    lines = Encoder(minor).preamble().split(b"\n")
    kept = b"\n".join(line for line in lines if not line.startswith(dropped))
    _fails(kept, RemoteProtocolError, message)


def test_old_peer_may_omit_attributes_and_finish() -> None:
    lines = Encoder(0).preamble().split(b"\n")
    assert _run(b"\n".join(line for line in lines if line[:1] not in (b"A", b"F"))) == []


def test_record_of_unannounced_item() -> None:
    _fails(Encoder(0).preamble() + b"Ap\tk\n", RemoteProtocolError,
           "Remote didn't handshake deserializer for mailbox_attribute")


def test_unknown_header_lines_and_keys_are_ignored() -> None:
    header = PREAMBLE.replace(b"\n.\n", b"\nZfuture\tkeys\n\n.\n").replace(
        b"Rguid\tuid", b"Rnew\tguid\tuid")
    assert _run(header + b"Rx\tg\t7\n") == [_request("g", 7)]


def _request(guid: str, uid: int) -> object:
    from pydsync_server.protocol.items import MailRequest
    return MailRequest(guid=guid, uid=uid)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "EOF (version not received)"),
    (b"VERSION\tds", "EOF (version not received)"),
    (PREAMBLE[:40], "EOF (handshake not received)"),
    (PREAMBLE, "EOF (last recv=handshake)"),
    (PREAMBLE + b"Cs\t1", "EOF in the middle of a record (last recv=handshake)"),
    (PREAMBLE + b"Cs\t1\n.\n", "EOF (last recv=mail_change (EOL))"),
    (PREAMBLE + b"Mg\t\x02\t\x02\t\x02\t\x02\t\x02\t\nbody\r\n", "EOF inside a stream "
     "(last recv=mail)"),
    (PREAMBLE + b"Mg\t\x02\t\x02\t\x02\t\x02\t\x02\t\n", "EOF inside a stream (last recv=mail)"),
])
def test_eof(data: bytes, message: str) -> None:
    _fails(data, PeerClosedError, message, eof=True)


def test_eof_is_reported_after_buffered_events() -> None:
    decoder = Decoder()
    decoder.feed(PREAMBLE + b"Cs\t1\n")
    decoder.feed_eof()
    assert decoder.next_event() == MailChange(type="s", uid=1)
    with pytest.raises(PeerClosedError):
        decoder.next_event()


def test_line_too_long() -> None:
    # The limit covers every line, the key header lines too (the H line has 400 bytes).
    record = b"Hvm\t" + b"x" * 1000
    _fails(PREAMBLE + record, RemoteProtocolError, "line too long", eof=False,
           max_line_length=1000)
    _fails(PREAMBLE + record + b"\n", RemoteProtocolError, "line too long",
           max_line_length=1000)
    assert _run(PREAMBLE + record + b"\r\n", max_line_length=1004) == [
        Handshake(hostname="vm", sync_ns_prefix=("x" * 1000,))]
    _fails(PREAMBLE, RemoteProtocolError, "line too long", max_line_length=100)


def test_long_stream_lines_are_not_limited() -> None:
    body = b"y" * 5000
    events = _run(PREAMBLE + b"Mg\t\x02\t\x02\t\x02\t\x02\t\x02\t\n" + body + b"\r\n.\r\n",
                  max_line_length=1000)
    assert len(events) == 3


def test_errors_are_sticky() -> None:
    decoder = Decoder()
    decoder.feed(b"BOGUS\n")
    for _ in range(2):
        with pytest.raises(RemoteProtocolError):
            decoder.next_event()


def test_done_ends_everything() -> None:
    decoder = Decoder()
    decoder.feed(PREAMBLE + b"X whatever\nQ garbage\n")
    assert decoder.next_event() == Done()
    decoder.feed(b"more garbage")
    decoder.feed_eof()
    assert decoder.next_event() == Done()
    with pytest.raises(RuntimeError):
        decoder.feed(b"after eof")


def test_crlf_lines_are_accepted() -> None:
    crlf = PREAMBLE.replace(b"\n", b"\r\n") + b"Cs\t1\r\n.\r\n"
    assert _run(crlf, eof=False) == _run(PREAMBLE + b"Cs\t1\n.\n", eof=False)


def test_save_guids_implied_before_minor_2() -> None:
    record = b"B" + GUID.encode() + b"\t1\t2\t3\t4\t5\t6\t\x02\t\x02\t\t\n"
    old, new = (_run(Encoder(m).preamble() + record)[0] for m in (1, 2))
    assert isinstance(old, Mailbox) and isinstance(new, Mailbox)
    assert old.have_guids and old.have_save_guids
    assert new.have_guids and not new.have_save_guids


def test_until_timestamp_zero_is_tolerated() -> None:
    # 2.3 masters send 0 for `-e` without `-t`; a Python slave accepts it (§15.2).
    record = b"Hvm" + b"\t\x02" * 18 + b"\t0\n"
    assert _run(PREAMBLE + record) == [Handshake(hostname="vm")]


@pytest.mark.parametrize(("item", "message"), [
    (MailChange(type="s", uid=1, add_flags=0x100), "mail_change: Invalid add_flags: 256"),
    (MailChange(type="s", uid=-1), "mail_change: Invalid uid: -1"),
    (MailChange(type="x", uid=1), "mail_change: Invalid type: x"),
    (MailboxState("nothex", 1, 1, 1, 1), "mailbox_state: Invalid mailbox_guid"),
    (MailboxTreeNode(name=(), existence="y"), "mailbox_tree_node: Empty name"),
    (MailboxTreeNode(name=("",), existence="y"), "mailbox_tree_node: Empty name"),
    (Handshake(hostname=""), "handshake: Missing required field hostname"),
    (Handshake(hostname="vm", sync_ns_prefix=("a\nb",)),
     "handshake: Invalid sync_ns_prefix: LF inside an element"),
    (MailboxAttribute(type="p", key=None), "mailbox_attribute: Missing required field key"),  # type: ignore[arg-type]
])
def test_encoder_rejects(item: object, message: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        Encoder().encode(item)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_encoder_minor0_has_no_attributes() -> None:
    with pytest.raises(LocalProtocolError, match="not part of protocol minor 0"):
        Encoder(0).encode(MailboxAttribute(type="p", key="k"))


def test_mail_stream_flag_follows_body() -> None:
    encoder = Encoder()
    assert encoder.encode(Mail(guid="g")) == b"Mg\n"
    assert encoder.encode(Mail(guid="g", body=io.BytesIO(b""))) == (
        b"Mg\t\x02\t\x02\t\x02\t\x02\t\x02\t\n")
