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
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util.retry import Retry

if TYPE_CHECKING:
    from hashlib import _Hash

    from urllib3 import BaseHTTPResponse

CHUNK = 1 << 20  # hashing and local copies
BLOCK = 64 << 10  # network reads: a cut loses nothing already received
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


def _no_space(part: str) -> FetchError:
    """A full disk is a ``FetchError`` (no other URL would help); the ``.part`` stays."""
    size = os.path.getsize(part) if os.path.exists(part) else 0
    return FetchError(
        f"{os.path.basename(part)[: -len('.part')]}: no space left on the device of "
        f"{os.path.dirname(os.path.abspath(part))} ({size} bytes written to "
        f"{os.path.basename(part)}, kept to resume once there is room)"
    )


def _check_room(part: str, need: int | None) -> None:
    """Refuse before streaming a file that cannot fit."""
    if need is None or need <= 0:
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
        try:
            with open(part, "wb") as f:
                while block := src.read(CHUNK):
                    f.write(block)
                    h.update(block)
                    bar.update(len(block))
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise _no_space(part) from None
    return h.hexdigest()


def _download(
    session: requests.Session,
    url: str,
    part: str,
    attempts: int,
    time_cap: float,
    timeout: tuple[float, float],
    bar: tqdm,
    notes: list[str],
) -> str:
    """Bring ``part`` to the full file from ``url``; return its sha256 (not yet checked).

    Tries go on while they bring new bytes: ``attempts`` tries in a row without progress, or
    ``time_cap`` seconds in all, give up on this URL. What happened on the way (cuts, a server
    that ignored Range, busy answers) is added to ``notes``."""
    held = _Held(part)
    if held.size:
        notes.append(f"resumed from {held.size} bytes of {os.path.basename(part)}")
    t0, idle, answered = time.monotonic(), 0, False
    seen: Counter[str] = Counter()
    last = ""
    while True:
        if idle >= attempts:
            raise _UrlFailed(
                f"{last}: {attempts} tries in a row brought no new byte ({held.kept()})"
            )
        if time.monotonic() - t0 > time_cap:
            raise _UrlFailed(f"{last}: gave up after {time_cap:.0f} s ({held.kept()})")
        if idle:
            time.sleep(min(0.2 * 2 ** (idle - 1), 5.0))
        before = held.size
        headers = {"Range": f"bytes={held.size}-"} if held.size else {}
        try:
            r = session.get(url, headers=headers, stream=True, timeout=timeout)
        except requests.RequestException as e:  # the session's Retry already retried this
            if not answered:  # never reached: let the next URL have its turn
                raise _UrlFailed(f"cannot connect: {_unreachable(e)}") from e
            last, idle = f"connection failed ({type(e).__name__})", idle + 1
            seen["connection failed"] += 1
            continue
        answered = True
        with r:
            for old in getattr(r.raw.retries, "history", ()) or ():
                if old.status:
                    seen[f"HTTP {old.status}"] += 1
            if r.status_code in _BUSY:
                last, idle = f"HTTP {r.status_code} {r.reason}".rstrip(), idle + 1
                seen[f"HTTP {r.status_code}"] += 1
                continue
            try:
                done = held.take(r, bar, seen, notes)
            except _CUT_ERRORS as e:
                seen["cut"] += 1
                last, done = f"transfer cut ({_why(e)})", False
            if done:
                _note(notes, seen)
                return held.h.hexdigest()
        idle = 0 if held.size > before else idle + 1


_BUSY = frozenset({429, 500, 502, 503, 504})


def _unreachable(e: Exception) -> str:
    """Why a server could not be reached, in a few words."""
    text = str(e)
    for marker, words in (
        ("NameResolutionError", "its host name does not resolve"),
        ("Connection refused", "connection refused"),
        ("Network is unreachable", "network unreachable"),
        ("No route to host", "no route to host"),
    ):
        if marker in text:
            return words
    if isinstance(e, requests.Timeout):
        return "connect timed out"
    return f"{type(e).__name__}: {text[:300]}"


def _why(e: Exception) -> str:
    """A short reason for a cut transfer: reset, timeout, or the body ended early."""
    text = str(e)
    if isinstance(e, requests.Timeout) or "timed out" in text.lower():
        return "read timed out"
    if "reset by peer" in text.lower():
        return "connection reset by the server"
    if "IncompleteRead" in text or "ended before" in text:
        return "connection closed before the end of the body"
    return f"{type(e).__name__}: {text}"


def _note(notes: list[str], seen: Counter[str]) -> None:
    if seen["cut"]:
        notes.append(f"transfer cut {seen['cut']} times, resumed each time")
    if seen["range ignored"]:
        notes.append(
            f"server ignored Range {seen['range ignored']} times (answered 200 with the whole "
            "file): the bytes already held were checked against it and skipped"
        )
    for what, n in sorted(seen.items()):
        if what.startswith(("HTTP ", "connection")):
            notes.append(f"{what} {n} times before it answered")


class _Held:
    """The ``.part`` file: how many bytes it holds and their running sha256."""

    def __init__(self, part: str) -> None:
        self.part = part
        self.h, self.size = _hash_prefix(part)

    def kept(self) -> str:
        return f"{self.size} bytes kept in {os.path.basename(self.part)} to resume"

    def reset(self) -> None:
        with open(self.part, "wb"):
            pass
        self.h, self.size = hashlib.sha256(), 0

    def take(self, r: requests.Response, bar: tqdm, seen: Counter[str], notes: list[str]) -> bool:
        """Write the body of ``r`` into the part; True when the file is complete. Raises one of
        ``_CUT_ERRORS`` when the body is cut (every byte received is kept)."""
        crange = r.headers.get("Content-Range", "")
        total_s = crange.rpartition("/")[2]
        total = int(total_s) if total_s.isdigit() else None
        if r.status_code == 416 and self.size:
            if total is None or total == self.size:
                return True  # the .part is already complete: verify it
            notes.append(f"{os.path.basename(self.part)} was longer than the file: started over")
            self.reset()
            return False
        if r.status_code == 206:
            if crange.removeprefix("bytes ").split("-")[0] != str(self.size):
                raise _UrlFailed(f"bad Content-Range {crange!r} (asked from byte {self.size})")
            skip = 0
        elif r.status_code == 200:
            length = r.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            skip = self.size
            if skip:
                seen["range ignored"] += 1
        else:
            raise _UrlFailed(f"HTTP {r.status_code} {r.reason}".rstrip())
        _check_room(self.part, None if total is None else total - self.size)
        bar.reset(total=total)
        bar.update(self.size)
        self._stream(r, skip, bar, notes)
        if total is not None and self.size < total:
            raise urllib3.exceptions.ProtocolError(f"body ended before {total} bytes")
        return True

    def _stream(self, r: requests.Response, skip: int, bar: tqdm, notes: list[str]) -> None:
        """Append the body, writing every block as it arrives. With ``skip`` (a 200 after a
        cut) the body's first ``skip`` bytes are compared with the held ones instead; from the
        first byte that differs, the body replaces what was held."""
        h = hashlib.sha256() if skip else self.h
        pos = 0 if skip else self.size  # where the next body byte belongs in the file
        try:
            with open(self.part, "r+b" if os.path.exists(self.part) else "wb", buffering=0) as f:
                f.seek(pos)
                while block := r.raw.read1(BLOCK, decode_content=False):
                    if pos < skip:
                        n = min(len(block), skip - pos)
                        held = f.read(n)
                        if held != block[:n]:
                            n = next(i for i in range(n) if held[i : i + 1] != block[i : i + 1])
                            skip = pos + n
                            notes.append(
                                f"the server's file differs from the held "
                                f"{os.path.basename(self.part)} at byte {skip}: "
                                "fetched again from there"
                            )
                            f.seek(skip)
                            f.truncate()
                        h.update(block[:n])
                        pos, block = pos + n, block[n:]
                        if pos < skip:
                            continue
                        self.h, self.size = h, pos  # caught up with the held bytes
                    if block:
                        _write_all(f, block)
                        h.update(block)
                        pos += len(block)
                        self.h, self.size = h, pos
                        bar.update(len(block))
                if pos < skip:  # a whole 200 body shorter than the held bytes
                    f.truncate(pos)
                    self.h, self.size = h, pos
                os.fsync(f.fileno())
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise _no_space(self.part) from None


def _write_all(f: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[f.write(view) :]


def fetch(
    urls: Sequence[str],
    dest: str | os.PathLike,
    sha256: str,
    *,
    session: requests.Session | None = None,
    attempts: int = 6,
    time_cap: float = 3600.0,
    timeout: tuple[float, float] = (10, 60),
    progress: bool | None = None,
    notes: list[str] | None = None,
) -> str:
    """Download dest from the first URL that yields the right bytes; return that URL.

    Each URL is tried while its tries bring new bytes (``attempts`` in a row without progress,
    or ``time_cap`` seconds, give up on it). Raises FetchError naming every URL tried and why
    it failed. A wrong file never stays behind; the ``.part`` of a cut transfer may stay so
    that a later run resumes it. ``notes`` receives one line per failure recovered from (a URL
    skipped, cuts, a server ignoring Range), for the run's summary.
    """
    dest = os.fspath(dest)
    part = dest + ".part"
    expected = sha256.lower()
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    own = session is None
    session = session or make_session()
    errors: list[str] = []
    said: list[str] = [] if notes is None else notes
    disable = None if progress is None else not progress
    try:
        with tqdm(
            desc=os.path.basename(dest), unit="B", unit_scale=True, unit_divisor=1024,
            leave=False, disable=disable, file=sys.stderr,
        ) as bar:  # fmt: skip
            for url in urls:
                for _ in range(2):  # a second, fresh try if a stale .part spoiled the first
                    resumed = os.path.exists(part) and not url.startswith("file://")
                    on_way: list[str] = []
                    try:
                        if url.startswith("file://"):
                            got = _copy_local(url, part, bar)
                        else:
                            got = _download(
                                session, url, part, attempts, time_cap, timeout, bar, on_way
                            )
                    except _UrlFailed as e:
                        errors.append(f"{url}: {e}")
                        break
                    if got == expected:
                        os.replace(part, dest)
                        _fsync_dir(os.path.dirname(os.path.abspath(dest)))
                        said += [f"{e} (next URL tried)" for e in errors] + on_way
                        return url
                    os.remove(part)
                    if not resumed:
                        errors.append(f"{url}: sha256 mismatch: expected {expected}, got {got}")
                        break
                    errors.append(f"{url}: the resumed {os.path.basename(part)} was wrong")
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
