"""The store's download cap: one rate, or a timetable of rates by time of day.

PHOTO_SYNC_EDGE_BANDWIDTH_LIMIT takes either form:

- a plain rate, today's form: `2000000` (bytes per second; a bare number always means
  bytes), `512k`, `1.5M`; `0` or `off` for none;
- a timetable in rclone's `--bwlimit` form: `08:00,512k 12:00,2M 20:00,off`, times in the
  store's local time (HH:MM, strictly increasing). Each rate holds from its time until the
  next entry's; the last one also holds past midnight until the first entry's time, so a
  timetable covers the whole day. Inside a timetable a rate needs its unit (`512k`, not
  `512`): rclone reads a bare number as KiB/s, the agent's plain form as bytes/s, and a
  timetable copied from one to the other must not silently mean a thousand times less.

Units are rclone's binary ones: B, K (KiB), M (MiB), G, T, P, in either case.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from photo_sync.errors import ConfigError

__all__ = ["NO_CAP", "Timetable", "Window", "format_rate", "parse"]

UNITS = {"b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4, "p": 1024 ** 5}
_RATE = re.compile(r"^(\d+(?:\.\d+)?)([bkmgtp])?$", re.I)
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_WEEKDAY = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)-", re.I)
SETTING = "PHOTO_SYNC_EDGE_BANDWIDTH_LIMIT"


@dataclass(frozen=True)
class Window:
    """One entry of a timetable: from `start` (minutes after local midnight) on, `rate`
    bytes per second (0 = no cap)."""

    start: int
    rate: int

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d},{format_rate(self.rate)}"


@dataclass(frozen=True)
class Timetable:
    """The cap by time of day; a plain rate is a timetable of one window from 00:00."""

    windows: tuple[Window, ...]
    text: str = ""

    @classmethod
    def constant(cls, rate: int) -> "Timetable":
        return cls((Window(0, max(int(rate), 0)),), str(rate))

    @property
    def is_constant(self) -> bool:
        return len(self.windows) == 1

    def window_at(self, when: dt.datetime | dt.time) -> Window:
        """The window that holds at local time `when`: the last entry at or before it, or
        before the first entry, the day's last (it runs on past midnight)."""
        minute = when.hour * 60 + when.minute
        current = self.windows[-1]
        for window in self.windows:
            if window.start > minute:
                break
            current = window
        return current

    def rate_at(self, when: dt.datetime | dt.time) -> int:
        """Bytes per second at local time `when` (0 = no cap)."""
        return self.window_at(when).rate

    def __str__(self) -> str:
        if self.is_constant:
            return format_rate(self.windows[0].rate)
        return " ".join(map(str, self.windows))


NO_CAP = Timetable.constant(0)


def format_rate(rate: int) -> str:
    """`off`, or the rate in the largest binary unit that divides it (`512k`, `2M`), else
    in bytes per second."""
    if rate <= 0:
        return "off"
    for unit in "PTGMK":
        size = UNITS[unit.lower()]
        if rate % size == 0:
            return f"{rate // size}{unit.lower() if unit == 'K' else unit}"
    return f"{rate} B/s"


def _rate(text: str, *, timetable: bool, where: str) -> int:
    if text.lower() == "off":
        return 0
    if ":" in text:
        raise ConfigError(f"{where}: {text!r} looks like rclone's upload:download pair; the "
                          "agent only downloads: give one rate, e.g. 512k")
    match = _RATE.match(text)
    if not match:
        raise ConfigError(f"{where}: {text!r} is not a rate: give a number with a unit "
                          "B, K, M, G, T or P (binary, as rclone's: 512k, 1.5M) or off")
    number, unit = match.groups()
    if unit is None:
        if timetable:
            raise ConfigError(f"{where}: the rate {text!r} has no unit: inside a timetable "
                              f"write it as {text}k for KiB/s (as rclone reads it) or {text}B "
                              "for bytes per second")
        if "." in number:
            raise ConfigError(f"{where}: {text!r} is not a whole number of bytes per second")
    return int(float(number) * UNITS[(unit or "b").lower()])


def _minute(text: str, where: str) -> int:
    if _WEEKDAY.match(text):
        raise ConfigError(f"{where}: {text!r} names a weekday; the agent's timetable is "
                          "the same every day: give HH:MM,RATE")
    match = _TIME.match(text)
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ConfigError(f"{where}: {text!r} is not a time of day: give HH:MM, "
                          "00:00 to 23:59, in the store's local time")
    return int(match[1]) * 60 + int(match[2])


def parse(text: str | int | Timetable, setting: str = SETTING) -> Timetable:
    """The Timetable `text` writes (a plain rate or `HH:MM,RATE ...`); ConfigError naming
    `setting`, the entry and what is wrong with it."""
    if isinstance(text, Timetable):
        return text
    raw = str(text).strip()
    if not raw:
        return NO_CAP
    if "," not in raw:
        if _TIME.match(raw.split()[0]):
            raise ConfigError(f"{setting}={raw!r}: a timetable entry is HH:MM,RATE (a time, "
                              "a comma, its rate), e.g. '08:00,512k 20:00,off'")
        if " " in raw:
            raise ConfigError(f"{setting}={raw!r}: a timetable's entries are HH:MM,RATE "
                              "separated by spaces, e.g. '08:00,512k 20:00,off'")
        return Timetable((Window(0, _rate(raw, timetable=False, where=f"{setting}={raw!r}")),),
                         raw)
    windows: list[Window] = []
    for entry in raw.split():
        where = f"{setting}={raw!r}, entry {entry!r}"
        at, sep, rate = entry.partition(",")
        if not sep or not at or not rate:
            raise ConfigError(f"{where}: give HH:MM,RATE (e.g. 08:00,512k)")
        minute = _minute(at, where)
        if windows and minute <= windows[-1].start:
            raise ConfigError(f"{where}: the times must be in increasing order, each once "
                              f"({at} comes after {windows[-1]})")
        windows.append(Window(minute, _rate(rate, timetable=True, where=where)))
    return Timetable(tuple(windows), raw)
