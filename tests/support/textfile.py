"""Reading node_exporter textfiles the agent writes, as a test looks at them."""

from __future__ import annotations

from pathlib import Path


def samples(path: Path) -> dict[str, float]:
    """The textfile's samples, `name{labels}` -> value."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out
