"""Pictures of the run report: scenes with their boxes and crop marked, crops, neighbour thumbnails.

Small images are enlarged by an integer factor (nearest) so the pixels the model saw stay visible.
Everything returns PNG bytes or ``data:`` URIs; the templates build the ``<img>`` tags.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from dejavu.data.decode import display_image, scaled_inwards
from dejavu.data.records import ImageTable
from dejavu.report.templating import data_uri

# Small images are enlarged to about this many pixels (integer factor, nearest) so 32- or 64-px
# scenes and their crops stay legible without blurring the pixels the model actually saw.
DISPLAY_PX = 96
BOX_COLOUR = (230, 0, 0)
CROP_COLOUR = (0, 150, 255)


def upscale_factor(side: int) -> int:
    return max(1, round(DISPLAY_PX / max(side, 1)))


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def enlarge(pixels: np.ndarray) -> tuple[Image.Image, int]:
    """uint8 (H, W, 3) -> PIL image enlarged by an integer factor (nearest), and that factor."""
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    factor = upscale_factor(max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST), factor


def annotated_image(pixels: np.ndarray, boxes: np.ndarray, square: Sequence[int]) -> bytes:
    """The full image with its foreground boxes (red) and the embedded crop square (blue).

    pixels: uint8 (H, W, 3); boxes: float (m, 4) pixel xyxy; square: int (4,) half-open pixel xyxy.
    """
    image, f = enlarge(pixels)
    draw = ImageDraw.Draw(image)
    width = max(2, f // 2)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=float).reshape(-1, 4):
        # Boxes are continuous coordinates; the outline is drawn on the enclosing pixels.
        draw.rectangle([math.floor(x0 * f), math.floor(y0 * f), math.ceil(x1 * f) - 1, math.ceil(y1 * f) - 1],
                       outline=BOX_COLOUR, width=width)
    x0, y0, x1, y1 = (int(v) for v in square)
    if x1 > x0 and y1 > y0:
        draw.rectangle([x0 * f, y0 * f, x1 * f - 1, y1 * f - 1], outline=CROP_COLOUR, width=width)
    return png_of(image)


def crop_image(pixels: np.ndarray, square: Sequence[int]) -> bytes:
    """The crop square as it was cut (before the model's resize), enlarged."""
    x0, y0, x1, y1 = (int(v) for v in square)
    return png_of(enlarge(pixels[y0:y1, x0:x1])[0])


def view(table: ImageTable, position: int, max_side: int) -> tuple[np.ndarray, float, float]:
    """Pixels to show for one image (the file at most ``max_side`` px, or the stored pixels) and the
    x, y scale from full-resolution coordinates to them."""
    stored = table.images[position] if table.images is not None else None
    return display_image(str(table.paths[position]), stored, max_side)


def scaled(values: Sequence[float] | np.ndarray, scale_x: float, scale_y: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1, 4) * np.array([scale_x, scale_y, scale_x, scale_y])


def crop_figures(table: ImageTable, position: int, square: Sequence[int], image_id: str) -> list[dict[str, str]]:
    """The full image with boxes and crop marked, and the crop: ``uri``, ``alt`` and ``caption`` of each."""
    pixels, scale_x, scale_y = view(table, position, 192)
    marked = annotated_image(pixels, scaled(table.boxes_of(position), scale_x, scale_y),
                             scaled(square, scale_x, scale_y)[0].round().astype(int))
    # The crop from a larger decode, so that a small square of a big photo is still legible.
    large, large_x, large_y = view(table, position, 512)
    cut = scaled_inwards(tuple(int(v) for v in square), large_x, large_y)
    return [
        {"uri": data_uri(marked), "alt": f"full image {image_id}", "caption": "full image"},
        {"uri": data_uri(crop_image(large, cut)), "alt": f"crop of {image_id}",
         "caption": f"crop {int(square[2]) - int(square[0])} px"},
    ]


class Thumbnails:
    """Small PNG data URIs of dataset images by id, each encoded once (public images recur across queries)."""

    def __init__(self, table: ImageTable) -> None:
        self.table = table
        self.position_of = {str(i): p for p, i in enumerate(table.ids.tolist())}
        self._uris: dict[str, str] = {}

    def __call__(self, image_id: str) -> str:
        if image_id not in self._uris:
            # Small; the browser enlarges it (pixelated CSS), which keeps the report small.
            pixels = view(self.table, self.position_of[image_id], 96)[0]
            self._uris[image_id] = data_uri(png_of(Image.fromarray(pixels)))
        return self._uris[image_id]
