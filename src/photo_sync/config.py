"""Settings from the environment or a KEY=VALUE file; the environment wins.

The file format is the one systemd's EnvironmentFile= reads, so one file
serves the unit and `--config` alike.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path

from photo_sync.errors import ConfigError

__all__ = ["ConfigError", "Settings", "read_env_file", "read_fields", "setting"]


def read_env_file(path: str | os.PathLike) -> dict[str, str]:
    """Parse KEY=VALUE lines (comments, blank lines, optional quotes, `export `)."""
    values: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            # Never echo the line: it may hold a secret.
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE (the line has no '=' or "
                              "its name is not letters, digits and underscores)")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


class Settings:
    """Prefixed settings: `Settings("PHOTO_SYNC_EDGE_", config_file).get("STORE_ID")`."""

    def __init__(self, prefix: str, config_file: str | None = None,
                 environ: dict[str, str] | None = None, overrides: dict | None = None):
        self.prefix = prefix
        self._values: dict[str, str] = {}
        if config_file:
            self._values.update(read_env_file(config_file))
        env = os.environ if environ is None else environ
        # An empty variable counts as unset, so it never blanks out the file's value.
        self._values.update({k: v for k, v in env.items() if k.startswith(prefix) and v != ""})
        for key, value in (overrides or {}).items():
            if value is not None:
                self._values[prefix + key] = str(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The setting's value, or `default` when it is unset or empty."""
        value = self._values.get(self.prefix + name)
        return default if value in (None, "") else value

    def require(self, name: str, hint: str = "") -> str:
        """The setting's value; ConfigError naming the variable (and `hint`) when unset."""
        value = self.get(name)
        if value is None:
            more = f" ({hint})" if hint else ""
            raise ConfigError(f"{self.prefix}{name} is not set{more}: set it in the "
                              "environment or in the file given with --config")
        return value

    def get_int(self, name: str, default: int, minimum: int = 0) -> int:
        """A whole-number setting, at least `minimum`; ConfigError otherwise."""
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{self.prefix}{name}={raw!r} is not a whole number") from None
        if value < minimum:
            raise ConfigError(f"{self.prefix}{name}={value} is below the minimum {minimum}")
        return value

    def get_float(self, name: str, default: float, minimum: float = 0.0,
                  maximum: float | None = None) -> float:
        """A number setting within `minimum`..`maximum`; ConfigError otherwise."""
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{self.prefix}{name}={raw!r} is not a number") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise ConfigError(f"{self.prefix}{name}={value} is outside {minimum}..{maximum}")
        return value

    def get_bool(self, name: str, default: bool) -> bool:
        """A true/false setting (1/0, true/false, yes/no, on/off); ConfigError otherwise."""
        raw = self.get(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{self.prefix}{name}={raw!r} is not true or false")


def setting(default=dataclasses.MISSING, *, minimum=None, maximum=None, parse=None,
            hint: str = "") -> dataclasses.Field:
    """A field of a settings dataclass: its default, bounds and check, written once.

    `read_fields` reads it from PREFIX + the field's name in capitals, typed by the
    field's annotation (str, bool, int or float); `parse` (value -> value, ConfigError when
    wrong) checks or normalises it; `hint` says what a required setting is for. No default:
    the setting is required."""
    metadata = {"minimum": minimum, "maximum": maximum, "parse": parse, "hint": hint}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def read_fields(cls, settings: Settings, required: tuple[str, ...] = ()) -> dict:
    """{field name: value} for every field of the settings dataclass `cls`, read from
    `settings` by the field's declaration (see `setting`), in field order; ConfigError
    naming the first that is wrong. Fields in `required` (checked first, in that order) and
    fields without a default must be set."""
    types = typing.get_type_hints(cls)
    specs = {spec.name: spec for spec in dataclasses.fields(cls)}
    # The required ones first, in the order given: the first missing is the one named.
    for name in required:
        settings.require(name.upper(), specs[name].metadata.get("hint", ""))
    values = {}
    for spec in specs.values():
        name, kind, meta = spec.name.upper(), types[spec.name], spec.metadata
        default = spec.default
        if default is dataclasses.MISSING:
            settings.require(name, meta.get("hint", ""))
        minimum = meta.get("minimum")
        if kind is bool:
            value = settings.get_bool(name, default)
        elif kind is int:
            value = settings.get_int(name, default, minimum=minimum or 0)
        elif kind is float:
            value = settings.get_float(name, default, minimum or 0.0, meta.get("maximum"))
        else:
            value = settings.get(name, default)
        if meta.get("parse"):
            value = meta["parse"](value)
        values[spec.name] = value
    return values
