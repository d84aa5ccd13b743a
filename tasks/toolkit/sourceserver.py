"""The toolkit's source server, played by this project while a stage's make runs.

The toolkit downloads from ``$SOURCE_URL/<file>`` (the raw toolchain's wget, srpmpacker). A
stage with ``toolkit_sources`` serves the files the ``toolkitsources`` step laid out (links
into ``mirror/``, each verified by sha256 there) on 127.0.0.1 at a free port, for the
duration of its make, and passes that URL as ``SOURCE_URL``: the toolkit gets the mirror's
bytes through its own download code, with no network. Only the listed files are served
(anything else is a 404, noted in the stage's log with the request); plain GET and HEAD,
whole files (the toolkit asks for no ranges: its ``.part`` files never survive a fresh
attempt).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Served:
    """The running server: its URL and what it was asked for."""

    url: str
    sent: list[str] = field(default_factory=list)  # files served whole
    refused: list[str] = field(default_factory=list)  # "<path> (<why>)"
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server_version = "azl-bootstrap-sources"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._send(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._send(body=True)

    def _send(self, body: bool) -> None:
        srv = self.server
        state: Served = srv.state  # type: ignore[attr-defined]
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        path = srv.root / name  # type: ignore[attr-defined]
        why = None
        if name not in srv.files:  # type: ignore[attr-defined]
            why = "not a listed toolkit source"
        elif not path.is_file():
            why = "listed, but not in the mirror"
        if why:
            with state.lock:
                state.refused.append(f"{self.path} ({why})")
            self.send_error(404, why)
            return
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if body:
                shutil.copyfileobj(f, self.wfile, 1 << 20)
        if body:
            with state.lock:
                state.sent.append(name)


@contextlib.contextmanager
def serve(root: Path, files: set[str]) -> Iterator[Served]:
    """Serve ``root/<file>`` for each of ``files`` on 127.0.0.1 while the block runs."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    state = Served(f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.root, httpd.files, httpd.state = root, frozenset(files), state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, name="toolkit-sources", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
