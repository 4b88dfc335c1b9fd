#!/usr/bin/env python3
"""Generate real product photos (JPEG) for the demo and the fleet tests.

    demo-photos.py DIR [--count N] [--seed S] [--start K]

Writes DIR/photo-<k>.jpg for k = start .. start+count-1 and DIR/product-map.csv
(filename, product_id, is_primary, sort_order: two or three photos per
product). The same arguments give the same bytes, so re-importing them at HO
changes nothing. Needs Pillow (in the project's test extra).
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import uuid
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

PRODUCTS = uuid.UUID("3a1f6c2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b")


def photo(rng: random.Random, index: int) -> bytes:
    """A photo-like JPEG: gradient, shapes and grain, 30-400 KB."""
    width, height = rng.choice([(640, 480), (800, 600), (1024, 768), (1200, 900)])
    top = tuple(rng.randrange(256) for _ in range(3))
    bottom = tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / height
        draw.line([(0, y), (width, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    for _ in range(rng.randrange(5, 25)):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(20, max(21, width // 4))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x - r, y - r, x + r, y + r], fill=colour)
    draw.text((20, 20), f"product photo {index}", fill=(255, 255, 255))
    image = image.filter(ImageFilter.GaussianBlur(rng.choice([0, 1, 2])))
    grain = Image.effect_noise((width, height), rng.randrange(10, 60)).convert("RGB")
    image = Image.blend(image, grain, 0.15)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=rng.randrange(70, 96))
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--start", type=int, default=1)
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    rows = []
    total = 0
    for k in range(args.start, args.start + args.count):
        rng = random.Random(f"{args.seed}-{k}")
        # effect_noise draws from the global generator: seed it too.
        random.seed(f"{args.seed}-{k}")
        name = f"photo-{k:04d}.jpg"
        data = photo(rng, k)
        path = args.directory / name
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        total += len(data)
        product = (k - 1) // 3
        rows.append({"filename": name, "product_id": str(uuid.uuid5(PRODUCTS, str(product))),
                     "is_primary": "true" if (k - 1) % 3 == 0 else "false",
                     "sort_order": str((k - 1) % 3)})
    with (args.directory / "product-map.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["filename", "product_id", "is_primary", "sort_order"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"{args.count} photos, {total} bytes in {args.directory}")


if __name__ == "__main__":
    main()
