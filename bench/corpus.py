"""Seeded generator of a realistic Maildir++ corpus for the dsync benchmark.

Every message is built from its own RNG seeded by (seed, index), so a corpus is
byte-identical on regeneration (received dates spread over two years, so they and
what follows from them depend on --messages).
Files are written straight into cur/ (a few unseen INBOX mails into new/) with
Dovecot-style names and no dovecot-uidlist: the first Dovecot reader assigns UIDs
(storage-formats §1.7, "missing dovecot-uidlist and index").

    python bench/corpus.py --seed 1 --messages 10000 --out DIR   # DIR = the Maildir root
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

GENERATOR_VERSION = 2

# vname -> Maildir++ directory ("" = the root, i.e. INBOX), with the share of messages.
FOLDERS: tuple[tuple[str, str, float], ...] = (
    ("INBOX", "", 0.35),
    ("Sent", ".Sent", 0.12),
    ("Archive", ".Archive", 0.22),
    ("Lists", ".Lists", 0.20),
    ("Lists/Dev", ".Lists.Dev", 0.11),
)
# dovecot-keywords: letter a, b, c (storage-formats §1.5); same file in every folder.
KEYWORDS = ("$Forwarded", "NonJunk", "$label1")
USER = ("Bench User", "user@example.org")
START = 1672531200  # 2023-01-01T00:00:00Z; messages spread over two years
SPAN = 2 * 365 * 86400
ATTACH_OVER = 48_000  # bigger messages always carry an attachment
MAGIC = {
    "application/pdf": ("pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"),
    "image/jpeg": ("jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
    "image/png": ("png", b"\x89PNG\r\n\x1a\n"),
    "application/zip": ("zip", b"PK\x03\x04\x14\x00\x00\x00"),
}
WORDS_8BIT = tuple(
    "Grüße Straße naïve café año über Zürich déjà façade crème smörgåsbord Ελλάδα "
    "привет 日本語 Łódź Ærø € —".split()
)
FIRST = tuple(
    "Alice Bob Carol Dave Eve Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy "
    "Rupert Sybil Trent Victor Walter Zoë José Søren".split()
)
LAST = tuple(
    "Smith Jones Müller Garcia Rossi Dubois Novák Kowalski Tanaka Nguyen Olsen "
    "Papadopoulos Silva Murphy".split()
)
DOMAINS = tuple(
    "example.com example.net mail.example.edu corp.example lists.example.net "
    "shop.example bank.example".split()
)
LISTS = ("python-dev", "dovecot", "postfix-users", "announce", "devel")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
TZ_MINUTES = (0, 60, 120, -300, -420, 330, 540, -180)


@dataclass
class Stats:
    """What was generated; written out as the corpus manifest."""

    messages: int = 0
    bytes: int = 0
    sizes: list[int] = field(default_factory=list)
    per_folder: dict[str, int] = field(default_factory=dict)
    with_attachment: int = 0
    eight_bit: int = 0
    crlf: int = 0
    in_new: int = 0

    def manifest(self, seed: int) -> dict[str, object]:
        s = sorted(self.sizes)

        def pct(p: float) -> int:
            return s[min(len(s) - 1, int(p * len(s)))] if s else 0

        return {
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "messages": self.messages,
            "bytes": self.bytes,
            "per_folder": self.per_folder,
            "size_p10_p50_p90_p99_max": [
                pct(0.1),
                pct(0.5),
                pct(0.9),
                pct(0.99),
                s[-1] if s else 0,
            ],
            "over_1mib": sum(1 for x in s if x > 1 << 20),
            "with_attachment": self.with_attachment,
            "eight_bit": self.eight_bit,
            "crlf": self.crlf,
            "in_new": self.in_new,
        }


def make_vocab(seed: int) -> list[str]:
    """Pseudo-words from syllables, fixed by the seed (shared by every message)."""
    rng = random.Random(f"vocab:{seed}")
    syl = "ka to re mi sa lo ne ri po da ve chi an el or us th ing ver con pro st qu".split()
    words = {"".join(rng.choices(syl, k=rng.choice((1, 2, 2, 3, 3, 4)))) for _ in range(4000)}
    common = ["the", "and", "of", "to", "a", "in", "is", "it", "that", "for", "we", "on"]
    return common * 40 + sorted(words)


def text_block(rng: random.Random, nbytes: int, vocab: list[str]) -> str:
    """Wrapped paragraphs of about nbytes characters, lines of at most ~90 chars."""
    lines: list[str] = []
    total = 0
    while total < nbytes:
        line = " ".join(rng.choices(vocab, k=rng.randint(5, 12)))
        lines.append(line[0].upper() + line[1:] + ("." if rng.random() < 0.3 else ""))
        total += len(line) + 2
        if rng.random() < 0.18:
            lines.append("")
    return "\n".join(lines) + "\n"


def rfc5322_date(secs: int, tz_min: int) -> str:
    t = time.gmtime(secs + tz_min * 60)
    sign = "+" if tz_min >= 0 else "-"
    hh, mm = divmod(abs(tz_min), 60)
    return (
        f"{DAYS[t.tm_wday]}, {t.tm_mday} {MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {sign}{hh:02d}{mm:02d}"
    )


def person(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    addr = f"{first.lower()}.{last.lower()}@{rng.choice(DOMAINS)}"
    return f"{first} {last}", addr.encode("ascii", "ignore").decode()


def encode_word(text: str) -> str:
    """RFC 2047 B-encoding when the text is not plain ASCII."""
    if text.isascii():
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode()).decode() + "?="


def mailbox_hdr(name: str, addr: str) -> str:
    return f"{encode_word(name)} <{addr}>"


def b64_lines(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii")


@dataclass
class Msg:
    """Parameters drawn for one message."""

    rng: random.Random
    folder: str
    secs: int
    target: int
    vocab: list[str]
    eight_bit: bool = False
    attachment: bool = False


def headers(m: Msg) -> list[str]:
    rng, secs = m.rng, m.secs
    sent = m.folder == "Sent"
    frm = USER if sent else person(rng)
    to = person(rng) if sent else USER
    tz = rng.choice(TZ_MINUTES)
    date = rfc5322_date(secs - rng.randint(2, 600), tz)
    subject = " ".join(rng.choices(m.vocab[480:], k=rng.randint(2, 8))).capitalize()
    if rng.random() < 0.08:
        subject += " " + rng.choice(WORDS_8BIT)
    reply = rng.random() < 0.3
    out: list[str] = []
    if not sent:
        host = frm[1].split("@")[1]
        out.append(f"Return-Path: <{frm[1]}>")
        out.append(
            f"Received: from mail{rng.randint(1, 9)}.{host} (mail.{host} "
            f"[198.51.100.{rng.randint(1, 254)}])\n\tby mx.example.org (Postfix) "
            f"with ESMTPS id {rng.getrandbits(40):010X}\n\tfor <{USER[1]}>; "
            f"{rfc5322_date(secs, 0)}"
        )
        if rng.random() < 0.6:
            sig = b64_lines(rng.randbytes(256)).replace("\n", "\n\t ").rstrip()
            out.append(
                f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={host};\n"
                f"\ts=s{rng.randint(1, 3)}; t={secs}; h=from:to:subject:date:"
                f"message-id;\n\tbh={base64.b64encode(rng.randbytes(32)).decode()};"
                f"\n\tb={sig}"
            )
    out.append(f"From: {mailbox_hdr(*frm)}")
    out.append(f"To: {mailbox_hdr(*to)}")
    if rng.random() < 0.2:
        out.append(f"Cc: {mailbox_hdr(*person(rng))}, {mailbox_hdr(*person(rng))}")
    out.append(f"Subject: {'Re: ' if reply else ''}{encode_word(subject)}")
    out.append(f"Date: {date}")
    out.append(f"Message-ID: <{secs}.{rng.getrandbits(64):016x}@{frm[1].split('@')[1]}>")
    if reply:
        ref = f"<{secs - rng.randint(600, 90000)}.{rng.getrandbits(64):016x}@example.com>"
        out.append(f"In-Reply-To: {ref}")
        out.append(f"References: {ref}")
    if m.folder.startswith("Lists"):
        name = rng.choice(LISTS)
        out.append(f"List-Id: {name.title()} list <{name}.lists.example.net>")
        out.append(f"List-Unsubscribe: <mailto:{name}-leave@lists.example.net>")
    out.append("MIME-Version: 1.0")
    return out


def text_part(m: Msg, nbytes: int) -> tuple[list[str], str]:
    """A text/plain leaf: (its Content-* headers, its encoded body)."""
    rng = m.rng
    if not m.eight_bit:
        return (
            ["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit"],
            text_block(rng, nbytes, m.vocab),
        )
    vocab = m.vocab + list(WORDS_8BIT) * 30
    body = text_block(rng, nbytes, vocab)
    if rng.random() < 0.4:
        qp = binascii.b2a_qp(body.encode()).decode("ascii")
        return (
            [
                "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: quoted-printable",
            ],
            qp,
        )
    return (["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"], body)


def html_part(m: Msg, nbytes: int) -> tuple[list[str], str]:
    paras = text_block(m.rng, nbytes, m.vocab).split("\n\n")
    html = "<html><body>\n" + "".join(f"<p>{p}</p>\n" for p in paras) + "</body></html>\n"
    return (["Content-Type: text/html; charset=us-ascii", "Content-Transfer-Encoding: 7bit"], html)


def multipart(
    rng: random.Random, subtype: str, parts: list[tuple[list[str], str]]
) -> tuple[list[str], str]:
    boundary = f"=_bench_{rng.getrandbits(64):016x}"
    body = ["This is a multi-part message in MIME format.\n"]
    for hdrs, content in parts:
        body.append(f"\n--{boundary}\n" + "\n".join(hdrs) + "\n\n" + content)
    body.append(f"\n--{boundary}--\n")
    return ([f'Content-Type: multipart/{subtype};\n\tboundary="{boundary}"'], "".join(body))


def attachment(rng: random.Random, raw_size: int) -> tuple[list[str], str]:
    """An incompressible base64 attachment behind a real magic number."""
    ctype = rng.choice(sorted(MAGIC))
    ext, magic = MAGIC[ctype]
    data = magic + rng.randbytes(max(0, raw_size - len(magic)))
    name = (
        f"{rng.choice(('report', 'scan', 'photo', 'invoice', 'backup'))}-"
        f"{rng.randint(1, 9999)}.{ext}"
    )
    return (
        [
            f'Content-Type: {ctype}; name="{name}"',
            f'Content-Disposition: attachment; filename="{name}"',
            "Content-Transfer-Encoding: base64",
        ],
        b64_lines(data),
    )


def body_of(m: Msg, room: int) -> tuple[list[str], str]:
    """Content headers and body filling about `room` bytes."""
    rng = m.rng
    if m.attachment:
        text_len = min(room // 4, rng.randint(200, 3000))
        parts = [text_part(m, text_len)]
        raw = max(64, (room - text_len - 600) * 57 // 77)  # base64 + LF expands 57 -> 77
        n = 2 if rng.random() < 0.2 and raw > 20000 else 1
        parts += [attachment(rng, raw // n) for _ in range(n)]
        return multipart(rng, "mixed", parts)
    if rng.random() < 0.18:
        half = max(100, room // 2 - 200)
        return multipart(rng, "alternative", [text_part(m, half), html_part(m, half)])
    return text_part(m, room)


def draw_size(rng: random.Random) -> int:
    """Lognormal, median 8 KB (sigma 1.1) capped below 1 MiB, plus a 1 % 1.05-4 MiB tail."""
    if rng.random() < 0.01:
        return int(math.exp(rng.uniform(math.log(1.05 * 2**20), math.log(4 * 2**20))))
    return min(int(rng.lognormvariate(math.log(8000), 1.1)), 1_000_000)


def draw_flags(rng: random.Random, folder: str) -> str:
    """Maildir info flags, sorted by ASCII as Dovecot writes them (storage-formats §1.3)."""
    f = set()
    if folder == "Sent" or rng.random() < 0.88:
        f.add("S")
    if folder != "Sent" and rng.random() < 0.12:
        f.add("R")
    if rng.random() < 0.03:
        f.add("F")
    if rng.random() < 0.004:
        f.add("T")
    if folder == "Sent" and rng.random() < 0.01:
        f.add("D")
    for letter, p in (("a", 0.03), ("b", 0.10 if folder != "Sent" else 0), ("c", 0.01)):
        if rng.random() < p:
            f.add(letter)
    return "".join(sorted(f))


def build(seed: int, i: int, n: int, vocab: list[str]) -> tuple[str, int, bytes, str, Msg]:
    """Message i: (folder vname, received time, bytes, flags, parameters)."""
    rng = random.Random(f"msg:{seed}:{i}")
    folder = rng.choices([f[0] for f in FOLDERS], weights=[f[2] for f in FOLDERS])[0]
    step = SPAN // max(n, 1)
    secs = START + i * step + int(rng.random() * step)
    target = draw_size(rng)
    m = Msg(
        rng,
        folder,
        secs,
        target,
        vocab,
        eight_bit=rng.random() < 0.2,
        attachment=target > ATTACH_OVER or rng.random() < 0.05,
    )
    hdr = headers(m)
    room = max(120, target - sum(len(h) + 1 for h in hdr) - 120)
    ctype, body = body_of(m, room)
    text = "\n".join(hdr + ctype) + "\n\n" + body
    data = text.encode("utf-8")
    if rng.random() < 0.04:
        data = data.replace(b"\n", b"\r\n")
    return folder, secs, data, draw_flags(rng, folder), m


def maildir_name(seed: int, secs: int, rng: random.Random, data: bytes, flags: str | None) -> str:
    """`<secs>.M<usecs>P<pid>.bench,S=<size>,W=<vsize>[:2,<flags>]` (storage-formats §1.3).

    W counts every bare LF as CRLF, which is how Dovecot computes the virtual size.
    """
    vsize = len(data) + data.count(b"\n") - data.count(b"\r\n")
    base = f"{secs}.M{rng.randrange(1_000_000)}P{1000 + seed % 90000}.bench,S={len(data)},W={vsize}"
    return base if flags is None else f"{base}:2,{flags}"


def make_tree(root: Path) -> dict[str, Path]:
    dirs: dict[str, Path] = {}
    for vname, sub, _ in FOLDERS:
        d = root / sub if sub else root
        for leaf in ("cur", "new", "tmp"):
            (d / leaf).mkdir(parents=True, exist_ok=True)
        if sub:
            (d / "maildirfolder").write_bytes(b"")
        (d / "dovecot-keywords").write_text("".join(f"{n} {k}\n" for n, k in enumerate(KEYWORDS)))
        dirs[vname] = d
    # Subscriptions file v2: levels joined by TAB (storage-formats §7.6).
    names = [vname.replace("/", "\t") for vname, _, _ in FOLDERS]
    (root / "subscriptions").write_text("V\t2\n\n" + "".join(f"{n}\n" for n in names))
    return dirs


def generate(seed: int, messages: int, out: Path) -> dict[str, object]:
    """Write the corpus under `out` (must not exist) and return its manifest.

    The tree is built in a sibling temp directory, synced, then renamed into place,
    so a half-written corpus is never visible under `out`.
    """
    if out.exists():
        raise FileExistsError(f"{out} already exists")
    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    dirs = make_tree(tmp)
    vocab = make_vocab(seed)
    st = Stats(per_folder={vname: 0 for vname, _, _ in FOLDERS})
    for i in range(messages):
        folder, secs, data, flags, m = build(seed, i, messages, vocab)
        to_new = folder == "INBOX" and "S" not in flags and m.rng.random() < 0.05
        name = maildir_name(seed, secs, m.rng, data, None if to_new else flags)
        path = dirs[folder] / ("new" if to_new else "cur") / name
        path.write_bytes(data)
        os.utime(path, (secs, secs))  # received date = mtime (storage-formats §1.6)
        st.messages += 1
        st.bytes += len(data)
        st.sizes.append(len(data))
        st.per_folder[folder] += 1
        st.with_attachment += m.attachment
        st.eight_bit += m.eight_bit
        st.crlf += b"\r\n" in data
        st.in_new += to_new
    os.sync()
    tmp.rename(out)
    return st.manifest(seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--out", type=Path, required=True, help="Maildir root to create")
    ap.add_argument("--manifest", type=Path, help="also write the manifest JSON here")
    args = ap.parse_args(argv)
    try:
        manifest = generate(args.seed, args.messages, args.out)
    except FileExistsError as e:
        print(f"corpus.py: {e}", file=sys.stderr)
        return 1
    text = json.dumps(manifest, indent=2)
    if args.manifest:
        args.manifest.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
