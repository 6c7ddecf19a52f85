"""One exception hierarchy for pydsync; every class knows its doveadm exit code.

Shared leaf module: every layer may import it. The CLI catches `DsyncError` once,
prints one line and exits with `exc.exit_code`. Numbers follow Dovecot 2.3.19
(`lib-storage/mail-error.h`, `doveadm-dsync.c`, sysexits.h); they are written out
explicitly, never derived from enum order.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of `doveadm sync|backup|dsync-server` (sysexits.h + doveadm's own)."""

    OK = 0
    FAILURE = 1
    CHANGES_DURING_SYNC = 2
    USAGE = 64  # EX_USAGE
    DATAERR = 65  # EX_DATAERR, doveadm "NOTPOSSIBLE"
    NOUSER = 67  # EX_NOUSER
    NOTFOUND = 68  # EX_NOHOST, doveadm "NOTFOUND"
    CANTCREAT = 73  # EX_CANTCREAT (NOQUOTA)
    TEMPFAIL = 75  # EX_TEMPFAIL
    NOPERM = 77  # EX_NOPERM
    CONFIG = 78  # EX_CONFIG


class MailError(IntEnum):
    """`enum mail_error` as sent in the `finish` item (Dovecot 2.3.19 numbering)."""

    NONE = 0
    TEMP = 1
    UNAVAILABLE = 2
    NOTPOSSIBLE = 3
    PARAMS = 4
    PERM = 5
    NOQUOTA = 6
    NOTFOUND = 7
    EXISTS = 8
    EXPUNGED = 9
    INUSE = 10
    CONVERSION = 11
    INVALIDDATA = 12
    LIMIT = 13
    LOOKUP_ABORTED = 14


_EXIT_FOR_MAIL_ERROR: dict[MailError, ExitCode] = {
    MailError.NONE: ExitCode.OK,
    MailError.TEMP: ExitCode.TEMPFAIL,
    MailError.UNAVAILABLE: ExitCode.TEMPFAIL,
    MailError.EXPUNGED: ExitCode.TEMPFAIL,
    MailError.LOOKUP_ABORTED: ExitCode.TEMPFAIL,
    MailError.NOTPOSSIBLE: ExitCode.DATAERR,
    MailError.EXISTS: ExitCode.DATAERR,
    MailError.CONVERSION: ExitCode.DATAERR,
    MailError.INVALIDDATA: ExitCode.DATAERR,
    MailError.INUSE: ExitCode.DATAERR,
    MailError.LIMIT: ExitCode.DATAERR,
    MailError.PARAMS: ExitCode.USAGE,
    MailError.PERM: ExitCode.NOPERM,
    MailError.NOQUOTA: ExitCode.CANTCREAT,
    MailError.NOTFOUND: ExitCode.NOTFOUND,
}


def exit_code_for(error: MailError | int) -> ExitCode:
    """doveadm's mapping from a mail_error to its exit code (unknown values: TEMPFAIL)."""
    try:
        return _EXIT_FOR_MAIL_ERROR[MailError(error)]
    except ValueError:
        return ExitCode.TEMPFAIL


class DsyncError(Exception):
    """Root of every error pydsync reports to the user."""

    mail_error: MailError = MailError.TEMP

    @property
    def exit_code(self) -> ExitCode:
        return exit_code_for(self.mail_error)


class UsageError(DsyncError):
    """Bad command line or settings (exit 64)."""

    mail_error = MailError.PARAMS


class ConfigError(DsyncError):
    """Unusable configuration (exit 78, as doveadm's EX_CONFIG)."""

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.CONFIG


class UnknownUserError(DsyncError):
    """The user does not exist (exit 67)."""

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.NOUSER


class ProtocolError(DsyncError):
    """The byte stream broke the dsync protocol (exit 75, as Dovecot)."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol cannot express (a bug of ours)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that is not valid dsync protocol."""


class PeerClosedError(ProtocolError):
    """The peer closed the stream (EOF, or sent `X`) before the session ended."""


class IOStalledError(DsyncError):
    """No I/O progress for the -T timeout."""


class StorageError(DsyncError):
    """A storage operation failed; carries the mail_error that describes why."""

    def __init__(self, message: str, mail_error: MailError = MailError.TEMP) -> None:
        super().__init__(message)
        self.mail_error = mail_error


class MailboxNotFoundError(StorageError):
    def __init__(self, message: str) -> None:
        super().__init__(message, MailError.NOTFOUND)


class MailboxExistsError(StorageError):
    def __init__(self, message: str) -> None:
        super().__init__(message, MailError.EXISTS)


class InvalidMailboxNameError(StorageError):
    def __init__(self, message: str) -> None:
        super().__init__(message, MailError.PARAMS)


class RemoteFailedError(DsyncError):
    """The peer reported failure in its `finish` item."""

    def __init__(self, message: str, mail_error: MailError = MailError.TEMP) -> None:
        super().__init__(message)
        self.mail_error = mail_error
