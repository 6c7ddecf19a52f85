"""Command destinations and stdio: the remote `dsync-server` child, and our own fds 0/1.

The master runs the destination command with three pipes (dsync-protocol.md §2.1):
stdin/stdout carry the dsync stream, stderr is log text copied line by line to a
callback. `stdio_stream` turns fds 0/1 into the stream of a `dsync-server` slave;
`read_user_line` takes a `remoteprefix:` user line off fd 0 before that.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from ..errors import IOStalledError, PeerClosedError, UsageError
from . import DEFAULT_TIMEOUT
from .duplex import DuplexStream
from .rawlog import RawLog

SERVER_WORD = "dsync-server"
EXIT_WAIT = 30.0  # the master waits this long for the child, then SIGKILLs it (§10.2)
STDERR_DRAIN_WAIT = 5.0
MAX_USER_LINE = 1024  # bytes, LF included; a longer "user name" is not one

Log = Callable[[str], None]


def build_remote_argv(args: Sequence[str]) -> list[str]:
    """argv for a command destination (§2.1).

    A single argument is split on spaces (`"ssh host doveadm"`, `/path/tap.sh`); then
    `dsync-server` is appended unless it already is the last word. The caller has
    already ruled out locations (`scheme:`) and bare `[user@]host` destinations.
    """
    argv = [word for word in args[0].split(" ") if word] if len(args) == 1 else list(args)
    if not argv:
        raise UsageError("Empty remote command")
    if argv[-1] != SERVER_WORD:
        argv.append(SERVER_WORD)
    return argv


class RemoteProcess:
    """A running destination command: its dsync `stream`, and its stderr copied to `log`."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stream: DuplexStream,
        stderr_fd: int,
        log: Log,
    ) -> None:
        self.stream = stream
        self._popen = popen
        self._log = log
        self._stderr_thread = threading.Thread(
            target=self._copy_stderr, args=(stderr_fd,), name="dsync-remote-stderr", daemon=True
        )
        self._stderr_thread.start()

    @property
    def pid(self) -> int:
        return self._popen.pid

    def finish(self, timeout: float = EXIT_WAIT) -> int:
        """End of session: close our output, wait up to `timeout` s for the child (then
        SIGKILL), close the stream and report a failed exit through `log`.

        Returns the child's returncode (negative = killed by that signal). The stream
        keeps draining the child's stdout meanwhile, so the child cannot block on it.
        """
        self.stream.close_write()
        try:
            code = self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            code = self._popen.wait()
        self.stream.close()
        # A grandchild (ssh's helpers) may keep stderr open: don't wait for it forever.
        self._stderr_thread.join(STDERR_DRAIN_WAIT)
        if code > 0:
            self._log(f"Remote command returned error {code}")
        elif code < 0:
            self._log(f"Remote command died with signal {-code}")
        return code

    def _copy_stderr(self, fd: int) -> None:
        """Thread body: one `log` call per stderr line of the child, until it closes."""
        with os.fdopen(fd, "rb") as err:
            for line in err:
                self._log(line.rstrip(b"\r\n").decode("utf-8", "replace"))


def spawn_remote(
    argv: Sequence[str],
    *,
    log: Log,
    prefix_user: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    rawlog: str | RawLog | None = None,
    env: Mapping[str, str] | None = None,
) -> RemoteProcess:
    """Start the destination command with three pipes.

    With `prefix_user` (`remoteprefix:`), "<user>\\n" is the first thing written to the
    child's stdin, before the start-up burst (§2.1). An unstartable command raises
    `OSError` (e.g. FileNotFoundError) for the CLI to report.
    """
    raw = RawLog(rawlog) if isinstance(rawlog, str) else rawlog  # fail before spawning
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        popen = subprocess.Popen(
            list(argv), stdin=in_r, stdout=out_w, stderr=err_w, env=env, close_fds=True
        )
    except BaseException:
        for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
            os.close(fd)
        if raw is not None:
            raw.close()
        raise
    for fd in (in_r, out_w, err_w):
        os.close(fd)  # the child's ends
    stream = DuplexStream(out_r, in_w, timeout=timeout, rawlog=raw)
    remote = RemoteProcess(popen, stream, err_r, log)
    if prefix_user is not None:
        try:
            stream.write(f"{prefix_user}\n".encode("utf-8", "surrogateescape"))
        except BaseException:
            remote.finish(timeout=0)
            raise
    return remote


def stdio_stream(
    *, timeout: float = DEFAULT_TIMEOUT, rawlog: str | RawLog | None = None
) -> DuplexStream:
    """The `dsync-server` stream over fds 0/1, made impossible to corrupt by stray output.

    The stream gets private duplicates of fds 0 and 1; fd 0 is then pointed at
    /dev/null and fd 1 at stderr, and `sys.stdout` at `sys.stderr`, so a `print()` or a
    child process writing to stdout lands in the log instead of inside the dsync stream.
    """
    sys.stdout.flush()
    read_fd = os.dup(0)
    write_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(devnull, 0)
    finally:
        os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return DuplexStream(read_fd, write_fd, timeout=timeout, rawlog=rawlog)


def read_user_line(
    fd: int = 0, *, timeout: float = DEFAULT_TIMEOUT, limit: int = MAX_USER_LINE
) -> str:
    """The `remoteprefix:` first line, "<user>\\n" (§2.1), read from `fd` one byte at a
    time so that not one byte of the dsync stream behind it is consumed.

    EOF first raises `PeerClosedError`; no byte for `timeout` s `IOStalledError`; an
    empty, over-long or control-character "name" (e.g. a VERSION line: the master sent
    no user line) is a `UsageError`.
    """
    line = bytearray()
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        if len(line) >= limit:
            raise UsageError(f"User line from stdin is longer than {limit} bytes")
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise IOStalledError(f"No user line on stdin for {timeout:g} seconds")
        byte = os.read(fd, 1)
        if not byte:
            raise PeerClosedError("EOF on stdin before the user line")
        line += byte
    user = bytes(line[:-1]).removesuffix(b"\r").decode("utf-8", "surrogateescape")
    if not user or any(ord(c) < 0x20 or c == "\x7f" for c in user):
        raise UsageError(f"Invalid user line from stdin: {user[:80]!r}")
    return user
