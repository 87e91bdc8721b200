"""Start-up checks and the websocket Origin check of the viewer (viser serves, we guard).

* `check_bind(host, port)`: a bad port (65536), an address this machine does not have (192.0.2.1) or a name
  that does not resolve (nohost.invalid) is a StitchError at once. viser's own start-up retries 1000 ports
  in a background thread and never reports these: the CLI hung (or printed a thread traceback).
* `exposure_note(host, port)`: one line for a non-loopback bind ("" and 0.0.0.0 bind every interface).
* `origin_guard(host)`: while viser starts, its websocket server gets a request hook that refuses a
  handshake whose `Origin` is a foreign web site (a page the user visits must not drive the viewer, e.g.
  its Save button), and on a loopback bind a `Host` that is not loopback (DNS rebinding). Clients that send
  no Origin (scripts, tests) are not browsers and pass.
"""

from __future__ import annotations

import contextlib
import errno
import http
import ipaddress
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

from splat.errors import StitchError

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_patch_lock = threading.Lock()


def is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, port: int) -> None:
    """StitchError unless this machine can listen on host:port (a busy port is fine: the viewer moves on)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise StitchError(f"--port must be in 0..65535 (0: any free port), got {port}")
    if not isinstance(host, str) or len(host) > 253 or any(c.isspace() or c == "\0" for c in host):
        raise StitchError(f"--host {host!r} is not a host name or address")
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise StitchError(
            f"--host {host!r} does not resolve to an address of this machine ({exc}); use 127.0.0.1"
        ) from exc
    last: OSError | None = None
    for family, kind, proto, _, addr in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(addr)
            return
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return  # busy: LiveViewer takes the next free port
            last = exc
    raise StitchError(
        f"viewer cannot listen on {host}:{port} ({last.strerror if last else 'no address'}); "
        "use --host 127.0.0.1 or an address of this machine"
    )


def exposure_note(host: str, port: int) -> str | None:
    """A warning line for binds other than loopback, naming what really listens; None for loopback."""
    if is_loopback(host):
        return None
    where = "every network interface" if host in ("", "0.0.0.0", "::") else host
    shown = "0.0.0.0" if host == "" else host
    return (
        f"viewer: listening on {where} (http://{shown}:{port}): anyone who can reach this machine can see "
        "the scene and use the viewer; use --host 127.0.0.1 to keep it local"
    )


def origin_allowed(origin: str | None, host_header: str | None, bind_host: str) -> bool:
    """Same-origin websocket check: no Origin (not a browser) passes; otherwise Origin's host:port must be
    the Host the client connected to, and on a loopback bind that Host must be loopback."""
    host_name = _split_host(host_header or "")
    if is_loopback(bind_host) and host_name is not None and not is_loopback(host_name):
        return False
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return parts.netloc.lower() == (host_header or "").lower()


def _split_host(host_header: str) -> str | None:
    if not host_header:
        return None
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


@contextlib.contextmanager
def origin_guard(bind_host: str) -> Iterator[None]:
    """While viser's server starts (inside), its websocket handshakes go through `origin_allowed`."""
    import websockets.asyncio.server as ws_server
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    original = ws_server.serve

    def guarded_serve(*args, **kwargs):
        inner = kwargs.get("process_request")

        def process_request(connection, request):
            headers = request.headers
            if headers.get("Upgrade", "").lower() == "websocket" and not origin_allowed(
                headers.get("Origin"), headers.get("Host"), bind_host
            ):
                body = b"Forbidden: websocket from another origin\n"
                return Response(
                    http.HTTPStatus.FORBIDDEN.value,
                    "Forbidden",
                    Headers({"Content-Type": "text/plain", "Content-Length": str(len(body))}),
                    body,
                )
            return inner(connection, request) if inner is not None else None

        kwargs["process_request"] = process_request
        return original(*args, **kwargs)

    with _patch_lock:
        ws_server.serve = guarded_serve
        try:
            yield
        finally:
            ws_server.serve = original
