"""Timing one command: its process group's wall time, CPU (wait4 rusage of every reaped
descendant) and peak RSS (GNU time's %M for the largest process, sampled tree sum).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path


class TreeSampler(threading.Thread):
    """Polls /proc for the processes of one process group.

    Keeps the peak of their summed VmRSS (the tree) and the largest VmHWM seen (one
    process's own peak; unlike ru_maxrss it is not inflated by the pre-exec image of
    the forking Python parent, because exec starts a fresh mm).
    """

    def __init__(self, pgid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pgid, self.interval = pgid, interval
        self.tree_kb = self.hwm_kb = 0
        self.halt = threading.Event()

    def sample(self) -> None:
        total = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    if int(f.read().rsplit(b")", 1)[1].split()[2]) != self.pgid:  # pgrp
                        continue
                with open(f"/proc/{pid}/status", "rb") as f:
                    status = f.read()
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            for key in (b"VmRSS:", b"VmHWM:"):
                m = re.search(key + rb"\s+(\d+) kB", status)
                kb = int(m.group(1)) if m else 0
                if key == b"VmRSS:":
                    total += kb
                else:
                    self.hwm_kb = max(self.hwm_kb, kb)
        self.tree_kb = max(self.tree_kb, total)

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.interval)


@dataclass
class Timing:
    exit: int
    wall: float
    user: float
    sys: float
    rss_proc_mb: float  # largest single process of the tree: GNU time %M, else sampled VmHWM
    rss_tree_mb: float  # peak of the sampled VmRSS sum over the process group
    rss_hwm_sampled_mb: float
    rss_method: str
    timed_out: bool


def gnu_time() -> str | None:
    """/usr/bin/time if it is GNU time (the baseline's %M accounting), else None."""
    try:
        p = subprocess.run(["/usr/bin/time", "--version"], capture_output=True, text=True)
    except OSError:
        return None
    return "/usr/bin/time" if "GNU" in p.stdout + p.stderr else None


def timed(argv: list[str], logdir: Path, timeout: float, gtime: str | None) -> Timing:
    """Run argv in its own process group; wait4() rusage covers every reaped descendant.

    ru_maxrss survives exec, so a child forked from this (large) Python process would
    report our RSS: GNU time, a small C parent, measures %M instead when present.
    """
    mfile = logdir / "maxrss"
    if gtime:
        argv = [gtime, "-f", "%M", "-o", str(mfile), "--", *argv]
    with open(logdir / "stdout", "wb") as out, open(logdir / "stderr", "wb") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            cwd=logdir,
        )
        sampler = TreeSampler(p.pid)
        sampler.start()
        fired = threading.Event()

        def kill() -> None:
            fired.set()
            os.killpg(p.pid, 9)

        timer = threading.Timer(timeout, kill)
        timer.start()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
    sampler.halt.set()
    sampler.join()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, 9)  # stragglers (e.g. an orphaned server) must not outlive the run
    hwm = sampler.hwm_kb / 1024
    lines = mfile.read_text().split() if mfile.exists() else []
    proc = int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else None
    return Timing(
        p.returncode,
        wall,
        ru.ru_utime,
        ru.ru_stime,
        hwm if proc is None else proc,
        sampler.tree_kb / 1024,
        hwm,
        "sampled VmHWM" if proc is None else "GNU time %M",
        fired.is_set(),
    )
