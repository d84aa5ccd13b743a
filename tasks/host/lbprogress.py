"""Where a live-bootstrap run is, read from its serial log (``cache/logs/lb-image.log``).

Steps, in the order they go by:

- ``builder-hex0``: SeaBIOS boots the image; builder-hex0 echoes each command it runs on a line
  of its own, then the arguments: ``src`` (loading its sources: about 2500 files, minutes
  under TCG), then ``hex0`` (the first seeds);
- ``stage0-posix: <tool>``: kaem runs the stage0-posix chain (`` +> ./x86/artifact/hex1 ...``,
  wrapped at 80 columns);
- ``<pkg>``: live-bootstrap's ``build()`` (``steps/helpers.sh``) says
  ``<pkg>: beginning build using script ...`` for each step of ``steps/manifest``;
- ``azl-after``: our after-step (``recipes/lb-image/``);
- the end: our after-step's ``AZL-AFTER: done`` marker, then the kernel's power-off.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DONE_MARKER = "AZL-AFTER: done"
FAILED_MARKER = "AZL-AFTER: FAILED"
HOSTKEY_PREFIX = "AZL-HOSTKEY: "

_ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z]|.)")
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^Booting from Hard Disk"), "builder-hex0"),
    (re.compile(r"^src$"), "builder-hex0: loading sources"),
    (re.compile(r"^hex0$"), "builder-hex0: hex0 seeds"),
    (re.compile(r"^\+> (?:\./)?\S*/(?:artifact|bin)/([\w.+-]+)"), "stage0-posix: {0}"),
    (re.compile(r"^(\S+): beginning build using script"), "{0}"),
    (re.compile(r"^AZL-AFTER: start"), "azl-after"),
    (re.compile(r"^AZL-AFTER: done"), "finished"),
]


def steps(lines: Iterable[str]) -> list[str]:
    """The step names the lines pass through, each change once, in order."""
    seen: list[str] = []
    for raw in lines:
        line = _ANSI.sub("", raw).strip()  # SeaBIOS resets the terminal
        for pattern, name in _RULES:
            m = pattern.match(line)
            if m:
                step = name.format(*(g.rsplit("/", 1)[-1] for g in m.groups()))
                if not seen or seen[-1] != step:
                    seen.append(step)
                break
    return seen


class Follower:
    """Reads a growing log file and reports the new steps since the last call."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""
        self.last: str | None = None
        self.text_tail = ""

    def poll(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        text = self.partial + data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self.partial = lines.pop()
        self.text_tail = (self.text_tail + text)[-4096:]
        new = [s for s in steps(lines) if s != self.last]
        dedup: list[str] = []
        for s in new:
            if not dedup or dedup[-1] != s:
                dedup.append(s)
        if dedup:
            self.last = dedup[-1]
        return dedup
