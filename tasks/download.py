"""Verified, resumable downloads of source files.

``fetch`` streams a file into ``dest + '.part'``, resumes interrupted transfers with HTTP Range
requests, checks the sha256 and only then renames the file to ``dest``: ``dest`` is always
complete and verified. The Debian archive is located through the machine's apt sources
(``debian_archive_uri``), never through a host name written into the code.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util.retry import Retry

if TYPE_CHECKING:
    from hashlib import _Hash

    from urllib3 import BaseHTTPResponse

CHUNK = 1 << 20
# Errors while the body streams in: retried on the same URL with Range from the current size.
_CUT_ERRORS = (urllib3.exceptions.HTTPError, requests.ConnectionError, requests.Timeout)


class FetchError(Exception):
    """A source could not be fetched: message lists every URL tried with its reason (HTTP status,
    connection error, or 'sha256 mismatch: expected X, got Y')."""


class _UrlFailed(Exception):
    """This URL cannot deliver the file; the message is the reason."""


def debian_archive_uri(
    paths: Sequence[str] = ("/etc/apt/sources.list.d", "/etc/apt/sources.list"),
) -> str | None:
    """Base URI of Debian's main archive from the machine's apt sources (deb822 *.sources files:
    the URIs of the first stanza whose Suites do not end in -security; or one-line `deb URI suite
    ...` entries in *.list / sources.list). None if none found. No trailing slash.

    Among the candidates, one whose URI path ends in ``/debian`` is preferred, so third-party
    repositories listed earlier (alphabetically) do not win.
    """
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            files += [
                os.path.join(p, n)
                for n in sorted(os.listdir(p))
                if n.endswith((".sources", ".list"))
            ]
        elif os.path.isfile(p):
            files.append(p)
    found: list[str] = []
    for f in files:
        try:
            with open(f, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        found += _parse_deb822(text) if f.endswith(".sources") else _parse_one_line(text)
    preferred = [u for u in found if urllib.parse.urlsplit(u).path.endswith("/debian")]
    return (preferred or found or [None])[0]


def _parse_deb822(text: str) -> list[str]:
    out = []
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        suites, uris = fields.get("suites", "").split(), fields.get("uris", "").split()
        if fields.get("enabled", "yes").lower() == "no" or not uris or not suites:
            continue
        if "deb" in fields.get("types", "deb").split() and not all(
            s.endswith("-security") for s in suites
        ):
            out.append(uris[0].rstrip("/"))
    return out


def _parse_one_line(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2 and not words[1].endswith("-security"):
            out.append(words[0].rstrip("/"))
    return out


class _Retry(Retry):
    """Retry that never sleeps longer than 30 s for a server's Retry-After."""

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        after = super().get_retry_after(response)
        return None if after is None else min(after, 30.0)


def make_session(retries: int = 5, connect_retries: int = 2) -> requests.Session:
    """requests Session with urllib3 Retry for connect errors and 429/500/502/503/504 before the
    body (backoff_factor 0.2; respects Retry-After), header Accept-Encoding: identity, mounted
    for http and https. Connection failures get fewer retries than server errors: a host that
    cannot be reached (upstream, from a closed network) should cost well under a second before
    the next URL is tried, not six."""
    retry = _Retry(
        total=retries,
        connect=connect_retries,
        read=retries,
        status=retries,
        backoff_factor=0.2,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    session = requests.Session()
    session.headers["Accept-Encoding"] = "identity"
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's contents."""
    return _hash_prefix(path)[0].hexdigest()


def _hash_prefix(path: str | os.PathLike) -> tuple[_Hash, int]:
    h, size = hashlib.sha256(), 0
    if os.path.exists(path):
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
                size += len(block)
    return h, size


def _write(src: Iterable[bytes], part: str, mode: str, h: _Hash, bar: tqdm) -> None:
    """Append the chunks of ``src`` to ``part``, hashing them; fsync at the end. A full disk
    is a ``FetchError`` (no other URL would help); the ``.part`` stays for a later resume."""
    try:
        with open(part, mode) as f:
            for chunk in src:
                f.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        raise FetchError(
            f"{os.path.basename(part)[: -len('.part')]}: no space left on the device of "
            f"{os.path.dirname(os.path.abspath(part))} ({os.path.getsize(part)} bytes written to "
            f"{os.path.basename(part)}, kept to resume once there is room)"
        ) from None


def _check_room(part: str, need: int | None) -> None:
    """Refuse before streaming a file that cannot fit."""
    if need is None:
        return
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(part))).free
    if need > free:
        raise FetchError(
            f"{os.path.basename(part)[: -len('.part')]}: needs {need} more bytes but only "
            f"{free} are free in {os.path.dirname(os.path.abspath(part))}"
        )


def _copy_local(url: str, part: str, bar: tqdm) -> str:
    path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
    try:
        src = open(path, "rb")  # noqa: SIM115
    except OSError as e:
        raise _UrlFailed(f"{e.strerror or e}") from e
    with src:
        size = os.fstat(src.fileno()).st_size
        _check_room(part, size)
        bar.reset(total=size)
        h = hashlib.sha256()
        _write(iter(lambda: src.read(CHUNK), b""), part, "wb", h, bar)
    return h.hexdigest()


def _download(
    session: requests.Session,
    url: str,
    part: str,
    attempts: int,
    timeout: tuple[float, float],
    bar: tqdm,
) -> str:
    """Bring ``part`` to the full file from ``url``; return its sha256 (not yet checked)."""
    h, have = _hash_prefix(part)
    last: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            r = session.get(url, headers=headers, stream=True, timeout=timeout)
        except requests.RequestException as e:  # the session's Retry already retried this
            raise _UrlFailed(f"{type(e).__name__}: {e}") from e
        with r:
            total = r.headers.get("Content-Range", "").rpartition("/")[2]
            total = int(total) if total.isdigit() else None
            if r.status_code == 416 and have:
                if total is None or total == have:
                    return h.hexdigest()  # .part is already complete: verify it
                os.remove(part)  # .part is longer than the file: start over
                h, have = hashlib.sha256(), 0
                continue
            if r.status_code == 206:
                start = r.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
                if start != str(have):
                    raise _UrlFailed(f"bad Content-Range {r.headers.get('Content-Range')!r}")
                mode = "ab"
            elif r.status_code == 200:
                h, have, mode = hashlib.sha256(), 0, "wb"  # Range ignored: restart cleanly
                length = r.headers.get("Content-Length", "")
                total = int(length) if length.isdigit() else None
            else:
                raise _UrlFailed(f"HTTP {r.status_code} {r.reason}".rstrip())
            _check_room(part, None if total is None else total - have)
            bar.reset(total=total)
            bar.update(have)
            try:
                _write(r.raw.stream(CHUNK, decode_content=False), part, mode, h, bar)
                if total is not None and os.path.getsize(part) < total:
                    raise urllib3.exceptions.ProtocolError(f"body ended before {total} bytes")
                return h.hexdigest()
            except _CUT_ERRORS as e:
                last = e
                h, have = _hash_prefix(part)
    raise _UrlFailed(f"transfer cut {attempts} times, last: {type(last).__name__}: {last}")


def fetch(
    urls: Sequence[str],
    dest: str | os.PathLike,
    sha256: str,
    *,
    session: requests.Session | None = None,
    attempts: int = 6,
    timeout: tuple[float, float] = (10, 60),
    progress: bool | None = None,
) -> str:
    """Download dest from the first URL that yields the right bytes; return that URL.

    Raises FetchError naming every URL tried and why it failed. A wrong file never stays
    behind; the ``.part`` of a cut transfer may stay so that a later run resumes it.
    """
    dest = os.fspath(dest)
    part = dest + ".part"
    expected = sha256.lower()
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    own = session is None
    session = session or make_session()
    errors: list[str] = []
    disable = None if progress is None else not progress
    try:
        with tqdm(
            desc=os.path.basename(dest), unit="B", unit_scale=True, unit_divisor=1024,
            leave=False, disable=disable, file=sys.stderr,
        ) as bar:  # fmt: skip
            for url in urls:
                for _ in range(2):  # a second, fresh try if a stale .part spoiled the first
                    resumed = os.path.exists(part) and not url.startswith("file://")
                    try:
                        if url.startswith("file://"):
                            got = _copy_local(url, part, bar)
                        else:
                            got = _download(session, url, part, attempts, timeout, bar)
                    except _UrlFailed as e:
                        errors.append(f"{url}: {e}")
                        break
                    if got == expected:
                        os.replace(part, dest)
                        _fsync_dir(os.path.dirname(os.path.abspath(dest)))
                        return url
                    os.remove(part)
                    if not resumed:
                        errors.append(f"{url}: sha256 mismatch: expected {expected}, got {got}")
                        break
    finally:
        if own:
            session.close()
    tried = "\n".join(f"  {e}" for e in errors) or "  (no URLs given)"
    raise FetchError(f"could not fetch {os.path.basename(dest)}:\n{tried}")


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
