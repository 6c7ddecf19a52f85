"""Start-up cost: a `sync` that finds nothing to do loads only what it runs.

Most of a no-change run is Python importing modules, so the modules only a changed
mailbox, `-v`, `--json` or `--dry-run` needs are imported where they are used. Each
check runs pydsync in a fresh interpreter and lists the modules it ended up with.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from pydsync_server.cli.context import local_hostname

# Imported only when a mailbox has changes, or with -v / --json / --dry-run.
NOT_ON_A_NO_CHANGE_RUN = (
    "pydsync_server.brain.mailbox_sync",
    "pydsync_server.brain.importer",
    "pydsync_server.brain.exporter",
    "pydsync_server.brain.all_mail",
    "pydsync_server.brain.events",
    "pydsync_server.cli.report",
    "pydsync_server.cli.progress",
    "pydsync_server.cli.dry_run",
    "pydsync_server.cli.resync",
    "pydsync_server.storage.observed",
    "pydsync_server.transport.stream",
    "tempfile",
)
RUN = """
import io, json, sys
from pydsync_server.cli.main import main
out = io.BytesIO()
code = main(sys.argv[1:], stdout=out, stderr=sys.stderr)
print(json.dumps({"code": code, "out": out.getvalue().decode(), "modules": sorted(sys.modules)}))
"""


def _pydsync(home: Path, *args: str) -> tuple[int, str, set[str]]:
    """`pydsync sync ARGS` between ~/a and ~/b: exit code, stdout, modules loaded."""
    environ = {"PATH": os.environ.get("PATH", ""), "USER": "jane", "HOME": str(home)}
    environ["PYDSYNC_CONFIG"] = ""
    argv = ["-o", f"mail_location=maildir:{home}/a", "sync", *args, f"maildir:{home}/b"]
    done = subprocess.run(
        [sys.executable, "-c", RUN, *argv],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(done.stdout)
    return int(result["code"]), str(result["out"]), set(result["modules"])


def _store_with_mail(home: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (home / "a" / sub).mkdir(parents=True)
    for i in range(3):
        (home / "a" / "cur" / f"170000000{i}.M1P1.h:2,S").write_bytes(b"Subject: %d\n\nx\n" % i)


def test_a_sync_with_nothing_to_do_skips_the_modules_of_changes(tmp_path: Path) -> None:
    _store_with_mail(tmp_path)
    code, state, loaded = _pydsync(tmp_path, "-s", "")
    assert code == 0
    assert "pydsync_server.brain.importer" in loaded  # the copy needed it
    code, state, _ = _pydsync(tmp_path, "-s", state.strip())  # settles modseqs (as bench/)
    assert code == 0
    code, _, loaded = _pydsync(tmp_path, "-s", state.strip())
    assert code == 0
    assert sorted(loaded.intersection(NOT_ON_A_NO_CHANGE_RUN)) == []
    assert "pydsync_server.brain.brain" in loaded  # the run did sync


def test_json_still_loads_the_report(tmp_path: Path) -> None:
    _store_with_mail(tmp_path)
    code, _, loaded = _pydsync(tmp_path, "--json=" + str(tmp_path / "report.json"))
    assert code == 0
    assert "pydsync_server.cli.report" in loaded
    assert json.loads((tmp_path / "report.json").read_text())["exit_code"] == 0


def test_the_default_hostname_is_gethostname() -> None:
    assert local_hostname() == socket.gethostname()
