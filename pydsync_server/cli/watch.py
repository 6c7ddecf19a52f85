"""`-v`, `--json` and `--dry-run` of one `sync`/`backup` run: which users are watched,
where their stores' writes are reported, and what is printed at the end.

Standard output keeps one kind of content: the JSON report when it goes there (`--json`
or `--json=-`, which then also carries the `-s` states and the plan), else the plan of
a dry run, else the `-s` state lines. Progress goes to standard error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import DsyncError
from ..storage.base import Storage
from ..storage.location import UserEnv
from .context import Context
from .options import Parsed

if TYPE_CHECKING:
    from .report import RunReport, UserRun

# The report, progress, dry-run and observed-storage modules are imported only when
# -v, --json or --dry-run asks for them: a plain run never pays for loading them.


class Watch:
    def __init__(self, ctx: Context, command: str, parsed: Parsed) -> None:
        self.ctx = ctx
        self.progress = parsed.flag("progress")
        self.json: str | None = None
        if parsed.flag("json"):
            self.json = parsed.value("json") or "-"
        self.dry_run = parsed.flag("dry_run")
        self.many_users = False  # set by run_sync for -A / -F / -u mask runs
        self.report: RunReport | None = None  # only when something is watched
        if self.active:
            from .report import RunReport

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
        if self.report is None:
            return None
        from .progress import Progress
        from .report import UserRun

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
            from .dry_run import print_plan

            print_plan(self.ctx.stdout, run.user if self.many_users else "", run.plan())

    def finish(self, exit_code: int) -> None:
        if self.json is not None and self.report is not None:
            self.report.write(self.json, exit_code, self.ctx.stdout)


def watched(parsed: Parsed) -> bool:
    """Whether `-v`, `--json` or `--dry-run` was given."""
    return any(parsed.flag(dest) for dest in ("progress", "json", "dry_run"))


def observed(storage: Storage, run: UserRun | None, *, remote: bool) -> Storage:
    """`storage` with its writes reported to `run` as the local or the remote side's
    (as is when nothing is watched)."""
    if run is None:
        return storage
    from ..storage.observed import ObservedStorage
    from .report import LOCAL, REMOTE

    return ObservedStorage(storage, run.sink(REMOTE if remote else LOCAL))
