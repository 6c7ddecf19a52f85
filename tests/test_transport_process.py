"""Command destinations: argv building (§2.1), child stderr to the log, exit status, stdio."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pydsync_server.errors import UsageError
from pydsync_server.transport.process import build_remote_argv, spawn_remote


@pytest.mark.parametrize(
    ("args", "argv"),
    [
        (["ssh", "host", "doveadm"], ["ssh", "host", "doveadm", "dsync-server"]),
        (["ssh", "host", "doveadm", "dsync-server"], ["ssh", "host", "doveadm", "dsync-server"]),
        (["/path/tap.sh"], ["/path/tap.sh", "dsync-server"]),
        (["ssh host doveadm"], ["ssh", "host", "doveadm", "dsync-server"]),
        (["ssh  host doveadm dsync-server"], ["ssh", "host", "doveadm", "dsync-server"]),
        (["doveadm", "-o", "a=b c"], ["doveadm", "-o", "a=b c", "dsync-server"]),
    ],
)
def test_build_remote_argv(args: list[str], argv: list[str]) -> None:
    assert build_remote_argv(args) == argv


@pytest.mark.parametrize("args", [[], [""], ["   "]])
def test_build_remote_argv_rejects_an_empty_command(args: list[str]) -> None:
    with pytest.raises(UsageError):
        build_remote_argv(args)


def python_child(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


ECHO = """
    import os, sys
    sys.stderr.write("first log line\\nsecond log line\\n")
    sys.stderr.flush()
    while data := os.read(0, 65536):
        os.write(1, data)
    sys.exit(int(sys.argv[1]))
"""


def run_echo(exit_code: int, payload: bytes) -> tuple[bytes, int, list[str]]:
    log: list[str] = []
    remote = spawn_remote([*python_child(ECHO), str(exit_code)], log=log.append)
    remote.stream.write(payload)
    remote.stream.close_write()
    echoed = bytearray()
    while data := remote.stream.read():
        echoed += data
    code = remote.finish()
    return bytes(echoed), code, log


def test_child_echoes_and_its_stderr_goes_to_the_log() -> None:
    payload = b"VERSION\tdsync\t3\t5\n" * 50_000  # > pipe buffers both ways
    echoed, code, log = run_echo(0, payload)
    assert echoed == payload
    assert code == 0
    assert log == ["first log line", "second log line"]


def test_failing_child_is_reported() -> None:
    _, code, log = run_echo(3, b"x")
    assert code == 3
    assert log[-1] == "Remote command returned error 3"


def test_child_killed_by_a_signal_is_reported() -> None:
    log: list[str] = []
    remote = spawn_remote(
        python_child("import os, signal; os.kill(os.getpid(), signal.SIGTERM)"), log=log.append
    )
    assert remote.stream.read() == b""
    assert remote.finish() == -15
    assert log == ["Remote command died with signal 15"]


def test_child_that_does_not_exit_is_killed_after_the_wait() -> None:
    log: list[str] = []
    remote = spawn_remote(
        python_child(
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
        ),
        log=log.append,
    )
    assert remote.finish(timeout=0.5) == -9
    assert log == ["Remote command died with signal 9"]


def test_remoteprefix_user_line_comes_first() -> None:
    log: list[str] = []
    child = """
        import sys
        sys.stderr.write("user=" + sys.stdin.buffer.readline().decode())
        sys.stdout.buffer.write(sys.stdin.buffer.read())
    """
    remote = spawn_remote(python_child(child), log=log.append, prefix_user="a")
    remote.stream.write(b"VERSION\tdsync\t3\t5\n")
    remote.stream.close_write()
    assert remote.stream.read() == b"VERSION\tdsync\t3\t5\n"
    assert remote.finish() == 0
    assert log == ["user=a"]


def test_unstartable_command_raises_oserror() -> None:
    with pytest.raises(FileNotFoundError):
        spawn_remote(["/nonexistent/dsync-wrapper"], log=print)


def test_unwritable_rawlog_fails_before_the_child_starts(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with pytest.raises(FileNotFoundError):
        spawn_remote(["touch", str(marker)], log=print, rawlog=str(tmp_path / "missing" / "log"))
    assert not marker.exists()


def test_stdio_stream_keeps_prints_out_of_the_dsync_stream() -> None:
    """A dsync-server child: print() and a grandchild's stdout must land on stderr."""
    child = """
        import subprocess, sys
        from pydsync_server.transport.process import stdio_stream
        stream = stdio_stream(timeout=10)
        print("stray print")
        subprocess.run(["echo", "stray child"], check=True)
        stream.write(b"VERSION\\tdsync\\t3\\t5\\n")
        got = b""
        while data := stream.read():
            got += data
        stream.write(b"echo:" + got)
        stream.close()
    """
    proc = subprocess.run(
        python_child(child), input=b"from master", capture_output=True, timeout=30, check=True
    )
    assert proc.stdout == b"VERSION\tdsync\t3\t5\necho:from master"
    assert b"stray print\n" in proc.stderr
    assert b"stray child\n" in proc.stderr
