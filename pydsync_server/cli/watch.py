"""`-v`, `--json` and `--dry-run` of one `sync`/`backup` run: which users are watched,
where their stores' writes are reported, and what is printed at the end.

Standard output keeps one kind of content: the JSON report when it goes there (`--json`
or `--json=-`, which then also carries the `-s` states and the plan), else the plan of
a dry run, else the `-s` state lines. Progress goes to standard error.
"""

from __future__ import annotations

from ..errors import DsyncError
from ..storage.base import Storage
from ..storage.location import UserEnv
from ..storage.observed import ObservedStorage
from .context import Context
from .dry_run import print_plan
from .options import Parsed
from .progress import Progress
from .report import RunReport, UserRun


class Watch:
    def __init__(self, ctx: Context, command: str, parsed: Parsed) -> None:
        self.ctx = ctx
        self.progress = parsed.flag("progress")
        self.json: str | None = None
        if parsed.flag("json"):
            self.json = parsed.value("json") or "-"
        self.dry_run = parsed.flag("dry_run")
        self.many_users = False  # set by run_sync for -A / -F / -u mask runs
        self.report = RunReport(command, dry_run=self.dry_run)

    @property
    def active(self) -> bool:
        return self.progress or self.json is not None or self.dry_run

    @property
    def state_on_stdout(self) -> bool:
        """Whether the `-s` state is printed as its own line (not in dry runs, and not
        when the JSON report, which has it, goes to standard output)."""
        return not self.dry_run and self.json != "-"

    def user(self, name: str, destination: str, *, remote_observed: bool) -> UserRun | None:
        """A new watched user (None: nothing to watch)."""
        if not self.active:
            return None
        progress = Progress(self.ctx.stderr, name) if self.progress else None
        run = UserRun(name, destination, remote_observed=remote_observed, progress=progress)
        self.report.add(run)
        return run

    def user_env(self, name: str | None, operands: list[str], *, lookup: bool) -> UserEnv:
        """`ctx.user_env()`; a user it fails for (unknown: 67) is reported as failed."""
        try:
            return self.ctx.user_env(name, lookup=lookup)
        except DsyncError as exc:
            shown = name if name is not None else self.ctx.environ.get("USER", "")
            run = self.user(shown, " ".join(operands), remote_observed=False)
            if run is not None:
                run.failed(exc)
            raise

    def finish_user(self, run: UserRun | None) -> None:
        """A dry run's plan, unless the JSON report on standard output carries it."""
        if run is not None and self.dry_run and self.json != "-":
            print_plan(self.ctx.stdout, run.user if self.many_users else "", run.plan())

    def finish(self, exit_code: int) -> None:
        if self.json is not None:
            self.report.write(self.json, exit_code, self.ctx.stdout)


def watched(parsed: Parsed) -> bool:
    """Whether `-v`, `--json` or `--dry-run` was given."""
    return any(parsed.flag(dest) for dest in ("progress", "json", "dry_run"))


def observed(storage: Storage, run: UserRun | None, side: str) -> Storage:
    """`storage` with its writes reported to `run` (as is when nothing is watched)."""
    return storage if run is None else ObservedStorage(storage, run.sink(side))
