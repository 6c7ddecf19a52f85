"""`tcp:`/`tcps:` destinations: connect to a doveadm server and start its `dsync-server`.

Settings as Dovecot's (dsync-protocol.md §12): `doveadm_port` when the destination has
no port, `doveadm_username` (default `doveadm`) and `doveadm_password` for PLAIN,
`ssl_client_ca_file`/`ssl_client_ca_dir` (else the system store) to verify `tcps:`.
The remote's log lines (channel L) go to our stderr with their level.
"""

from __future__ import annotations

from ..errors import UsageError
from ..storage.location import UserEnv
from ..transport.doveadm_tcp import (
    LOG_LEVELS,
    ClientSettings,
    ClientStream,
    client_tls_context,
    connect_dsync,
    open_connection,
)
from .context import Context
from .destination import TcpDestination

DEFAULT_USERNAME = "doveadm"


def _setting_path(value: str) -> str:
    """A file setting; a 2.3-style `<path` (read this file) means the same here."""
    return value[1:] if value.startswith("<") else value


def tcp_port(ctx: Context, dest: TcpDestination) -> int:
    if dest.port is not None:
        return dest.port
    port = ctx.config.get("doveadm_port")
    if not port.isdigit() or int(port) == 0:
        raise UsageError(f"No port in destination and doveadm_port not set: {dest.host}")
    return int(port)


def tcp_stream(
    ctx: Context,
    user: UserEnv,
    dest: TcpDestination,
    *,
    timeout: float,
    replicator_notify: bool,
) -> ClientStream:
    """A connected, authenticated stream whose remote `dsync-server` has started."""
    tls = None
    if dest.ssl:
        tls = client_tls_context(
            _setting_path(ctx.config.get("ssl_client_ca_file")),
            _setting_path(ctx.config.get("ssl_client_ca_dir")),
        )
    settings = ClientSettings(
        username=ctx.config.get("doveadm_username") or DEFAULT_USERNAME,
        password=ctx.config.get("doveadm_password"),
        user=user.user,
        debug=ctx.debug,
        replicator_notify=replicator_notify,
        timeout=timeout,
    )
    log = ctx.log_for(f"dsync({user.user})")

    def remote_log(level: int, text: str) -> None:
        log(f"{LOG_LEVELS.get(level, 'Error')}: {text}")

    sock = open_connection(dest.host, tcp_port(ctx, dest), tls=tls, timeout=timeout)
    return connect_dsync(sock, settings, remote_log)
