"""A small threaded HTTP file server for tests, with injectable faults.

Usage::

    with serve({"a.tar.gz": data}, cut_after=1000) as srv:
        fetch([srv.url("a.tar.gz")], dest, sha)
        assert any(r.range for r in srv.requests)

It listens on 127.0.0.1 on an ephemeral port (HTTPS with ``tls=<ssl.SSLContext>``), serves HEAD and GET with single byte ranges
(206 + Content-Range, 416 when out of range) from a dict ``{path: bytes}`` or a directory.

Faults (for every path when given to ``serve``, or per path through ``set_fault``):

``cut_after=N``      announce the full length but close the connection after N body bytes,
                     for the first ``cut_times`` GETs (default 1)
``stall_after=N``    after N body bytes sleep ``stall_for`` seconds (default 5), then go on,
                     for the first ``cut_times`` GETs
``ignore_range``     always answer 200 with the full body
``range_every=K``    honour Range only on every K-th GET that carries one (the others get 200
                     with the full body), as some mirrors behind load balancers do
``rst``              end cut connections with a TCP reset (SO_LINGER 0) instead of a FIN: data
                     still in the server's send buffer is lost, as on a dropped link
``fail_first``       list of status codes answered (with ``Retry-After: 0``) to the first requests
``status``           answer every request with this status
``corrupt``          serve wrong bytes of the right length
``no_length``        send no Content-Length: the body ends when the connection closes
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = {"cut_after", "cut_times", "stall_after", "stall_for", "ignore_range", "fail_first"}
FAULTS |= {"status", "corrupt", "no_length", "range_every", "rst"}
_INVERT = bytes(255 - i for i in range(256))


@dataclass(frozen=True)
class Request:
    """One request the server received."""

    method: str
    path: str
    range: str | None


class Server:
    """The running server; see the module docstring."""

    def __init__(
        self,
        files: Mapping[str, bytes] | str | os.PathLike,
        tls: ssl.SSLContext | None = None,
        **faults: Any,
    ) -> None:
        self.files = files if isinstance(files, Mapping) else os.fspath(files)
        self.requests: list[Request] = []
        self._defaults = _check(faults)
        self._state: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self.port: int = self._httpd.server_address[1]
        self.scheme = "http"
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        """The http:// (or https://) URL of ``path`` on this server."""
        return f"{self.scheme}://127.0.0.1:{self.port}/{urllib.parse.quote(path.lstrip('/'))}"

    def set_fault(self, path: str, **faults: Any) -> None:
        """Replace the faults of ``path`` (no keywords: serve it without faults)."""
        with self._lock:
            self._state[path.lstrip("/")] = _fresh(_check(faults))

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _plan(self, method: str, path: str, rng: str | None) -> dict[str, Any]:
        """Record the request; return this request's faults, consuming one-shot ones."""
        with self._lock:
            self.requests.append(Request(method, path, rng))
            st = self._state.setdefault(path, _fresh(self._defaults))
            plan = dict(st)
            plan["fail"] = st["fail_first"].pop(0) if st["fail_first"] else None
            if method == "GET" and rng and st["range_every"] and not plan["fail"]:
                st["ranged"] += 1
                plan["ignore_range"] = plan["ignore_range"] or st["ranged"] % st["range_every"] != 0
            if method == "GET" and st["cut_times"] > 0:
                st["cut_times"] -= 1
            else:
                plan["cut_after"] = plan["stall_after"] = None
            return plan

    def _read(self, path: str) -> bytes | None:
        if isinstance(self.files, Mapping):
            return self.files.get(path)
        root = os.path.realpath(self.files)
        full = os.path.realpath(os.path.join(root, path))
        if not full.startswith(root + os.sep) or not os.path.isfile(full):
            return None
        with open(full, "rb") as f:
            return f.read()


def _check(faults: dict[str, Any]) -> dict[str, Any]:
    unknown = set(faults) - FAULTS
    if unknown:
        raise TypeError(f"unknown faults: {sorted(unknown)}")
    return faults


def _fresh(faults: dict[str, Any]) -> dict[str, Any]:
    st = {k: None for k in FAULTS} | {"cut_times": 1, "stall_for": 5.0} | faults
    st["ranged"] = 0  # GETs with a Range header seen so far (for range_every)
    st["fail_first"] = list(st["fail_first"] or ())
    return st


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections give up after this

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    def _status(self, code: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, head: bool) -> None:
        srv: Server = self.server.owner  # type: ignore[attr-defined]
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        rng = self.headers.get("Range")
        plan = srv._plan(self.command, path, rng)
        if plan["fail"] or plan["status"]:
            retry = {"Retry-After": "0"} if plan["fail"] else {}
            return self._status(plan["fail"] or plan["status"], retry)
        data = srv._read(path)
        if data is None:
            return self._status(404)
        if plan["corrupt"]:
            data = data.translate(_INVERT)
        code, start, end, size = 200, 0, len(data), len(data)
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", (rng or "").strip())
        if m and not plan["ignore_range"] and m.group(0) != "bytes=-":
            a, b = m.groups()
            start = int(a) if a else max(0, size - int(b))
            end = min(size, int(b) + 1) if a and b else size
            if start >= size or start >= end:
                return self._status(416, {"Content-Range": f"bytes */{size}"})
            code = 206
        body = data[start:end]
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        if plan["no_length"]:
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if head:
            return
        try:
            if plan["stall_after"] is not None:
                self.wfile.write(body[: plan["stall_after"]])
                self.wfile.flush()
                time.sleep(plan["stall_for"])
                body = body[plan["stall_after"] :]
            cut = plan["cut_after"] is not None and plan["cut_after"] < len(body)
            if cut:
                body = body[: plan["cut_after"]]
                self.close_connection = True  # the client sees the body end early
            self.wfile.write(body)
            if cut and plan["rst"]:
                self._reset()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. timed out)
            self.close_connection = True

    def _reset(self) -> None:
        """Close with a TCP RST: unsent data is dropped and the client's read fails."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()


def serve(
    files: Mapping[str, bytes] | str | os.PathLike, tls: ssl.SSLContext | None = None, **faults: Any
) -> Server:
    """Start a server for ``files`` (dict or directory) with ``faults`` for every path; HTTPS
    with the server context ``tls``."""
    return Server(files, tls, **faults)
