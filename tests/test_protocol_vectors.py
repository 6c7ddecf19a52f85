"""Golden tests: every recorded Dovecot stream decodes and re-encodes byte for byte."""

from __future__ import annotations

import pytest
from dsync_captures import DIRECTIONS, capture_names, coalesce, decode, dsync_bytes, reencode

from pydsync_server.protocol.codec import OWN_MINOR, Encoder, StreamData, StreamEnd, StreamStart
from pydsync_server.protocol.items import (
    END_OF_LIST,
    CacheField,
    Done,
    Finish,
    Handshake,
    Mail,
    Mailbox,
    MailboxAttribute,
    MailboxDelete,
    MailboxState,
    MailboxTreeNode,
    MailChange,
    MailRequest,
)
from pydsync_server.protocol.keys import KEY_HEADERS_24

CASES = [(name, direction) for name in capture_names() for direction in DIRECTIONS]
GUID = "84f4fc0efc740b6bc03f000083ecc375"


def test_all_captures_are_covered() -> None:
    assert len(CASES) == 2 * 37  # every scenario directory of vectors/README.md


@pytest.mark.parametrize(("name", "direction"), CASES)
def test_capture_reencodes_byte_for_byte(name: str, direction: str) -> None:
    data = dsync_bytes(name, direction)
    decoder, events = decode([data])
    assert events, "nothing decoded"
    assert reencode(decoder, events) == data


@pytest.mark.parametrize(("name", "direction"), CASES)
def test_capture_fed_one_byte_at_a_time(name: str, direction: str) -> None:
    data = dsync_bytes(name, direction)
    _, whole = decode([data])
    _, bytewise = decode(data[i:i + 1] for i in range(len(data)))
    assert coalesce(bytewise) == coalesce(whole)


def _events(name: str, direction: str) -> list[object]:
    return list(coalesce(decode([dsync_bytes(name, direction)])[1]))


def test_initial_sync_master_items() -> None:
    events = _events("a_initial_sync", "to-server")
    assert events[0] == Handshake(
        hostname="vm", sync_type="c", send_mail_requests=True,
        import_commit_msgs_interval=100, hashed_headers=("Date", "Message-ID"), alt_char="_")
    assert events[1] == MailboxTreeNode(name=("INBOX",), existence="y", mailbox_guid=GUID,
                                        uid_validity=1795912956, uid_next=4)
    assert events[2:4] == [END_OF_LIST, MailboxDelete(hierarchy_sep="/", escape_char="%")]
    assert events[4] == Mailbox(
        mailbox_guid=GUID, uid_validity=1795912956, uid_next=4, messages_count=3,
        first_recent_uid=1, highest_modseq=4, highest_pvt_modseq=0,
        cache_fields=(CacheField("flags", "t", 1795912956),
                      CacheField("mime.parts", "t", 1795912956)),
        have_guids=True, have_save_guids=True)
    assert events[6] == MailChange(type="s", uid=1, guid="1795912956.M251110P16320.vm,S=184,W=192",
                                   modseq=4, final_flags=0x20, virtual_size=2**64 - 1)


def test_initial_sync_mail_body_is_unstuffed() -> None:
    events = _events("a_initial_sync", "to-server")
    starts = [i for i, e in enumerate(events) if isinstance(e, StreamStart)]
    assert len(starts) == 3
    second = starts[1]
    assert events[second] == StreamStart(Mail(
        guid="1795912956.M277867P16321.vm,S=224,W=234", pop3_uidl="",
        received_date=1795912956, saved_date=1795912956))
    body = events[second + 1]
    assert isinstance(body, StreamData)
    assert b"Second message.\n.\nA line with a single dot above and\n.leading dot line.\n" \
        in body.data
    assert body.data.endswith(b"leading dot line.\n")
    assert len(body.data) == 224
    assert events[second + 2] == StreamEnd()


def test_slave_items() -> None:
    events = _events("a_initial_sync", "from-server")
    assert events[0] == Handshake(hostname="vm", hashed_headers=())
    assert MailRequest(guid="1795912956.M277867P16321.vm,S=224,W=234", uid=2) in events
    assert events[-3:] == [
        MailboxState(GUID, 1795912956, 3, 4, 0, 3), Finish(), Done()]


def test_folder_items() -> None:
    e2 = _events("e2_rename_delete", "to-server")
    assert MailboxDelete(
        hierarchy_sep="/", escape_char="%",
        mailboxes=(("9e3cec2f02750b6b8e40000083ecc375", 1795912964),),
        dirs=(("5767b0cd19478f7e125f2b392d2fc4ca", 1795912964),)) in e2
    assert any(isinstance(e, MailboxTreeNode) and e.name == ("Work", "Sub2")
               and e.last_renamed_or_created == 1795912964 for e in e2)
    e3 = _events("e3_nonexistent_parent_and_subscription", "to-server")
    assert MailboxTreeNode(name=("Parent",), existence="n") in e3
    assert MailboxTreeNode(name=("Ghost",), existence="n", subscribed=True,
                           last_subscription_change=1795913952) in e3


def test_change_and_attribute_items() -> None:
    c = _events("c_backup_flags_expunge_keyword", "to-server")
    assert MailChange(type="e", uid=2, guid="64de00de357f6ee519507bae8585474e") in c
    assert any(isinstance(e, MailChange) and e.keyword_changes == ("&$Label1",) for e in c)
    g1 = _events("g1_attributes_set", "to-server")
    assert MailboxAttribute(type="s", key="comment", value="multi\tline\nvalue", modseq=4) in g1
    g2 = _events("g2_attributes_unset", "to-server")
    assert MailboxAttribute(type="p", key="comment", deleted=True, modseq=5) in g2


def test_phase3_state_list() -> None:
    events = _events("d2_state_incremental", "to-server")
    assert events[1:3] == [MailboxState(GUID, 1795912956, 3, 9, 0, 2), END_OF_LIST]


def test_preamble_matches_dovecot() -> None:
    head = dsync_bytes("a_initial_sync", "from-server")
    preamble = Encoder().preamble()
    assert OWN_MINOR == 5
    assert head.startswith(preamble)
    assert preamble.count(b"\n") == 13


def test_preamble_minor0_and_24() -> None:
    j = dsync_bytes("j_python_master_minor0", "to-server")
    assert j.startswith(Encoder(0).preamble())
    assert b"\nA" not in Encoder(0).preamble() and b"\nF" not in Encoder(0).preamble()
    ya = dsync_bytes("v24_ya_24master_24server_sync_initial", "to-server")
    assert ya.startswith(Encoder(key_headers=KEY_HEADERS_24).preamble())


def test_minor0_peer_is_recorded() -> None:
    decoder, _ = decode([dsync_bytes("j_python_master_minor0", "to-server")])
    assert decoder.peer_minor == 0
    assert "A" not in decoder.peer_key_headers
