"""What the tests read of a photo mirror the agent wrote, and the HO ids of imported files."""

from __future__ import annotations

import os
import uuid


def linked(folder) -> dict:
    """{photo id: object name} of the mirror's links to bytes."""
    links = {p.name: os.path.basename(os.readlink(p)) for p in (folder / "ids").iterdir()
             if not p.name.startswith(".")}
    return {k: v for k, v in links.items() if v != "gone"}


def catalog_ids(ho, files) -> dict:
    """{file: HO's photo id (str)} of imported photo files (`<product id>/<filename>`)."""
    with ho.catalog() as conn:
        return {path: conn.execute(
            "SELECT id::text FROM product_photo WHERE product_id = %s AND filename = %s",
            (uuid.UUID(path.parent.name), path.name)).fetchone()["id"] for path in files}
