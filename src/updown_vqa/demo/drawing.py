"""The demo's attention pictures: the image shaded by attention (core.viz.draw_regions), the strongest
region outlined in red, as a PNG data URL the page shows without writing a file."""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from updown_vqa.core.viz import draw_regions

SIDE = 384  # pixels of the longer side of a drawn picture


def attention_png(image: Image.Image, boxes: np.ndarray, weights: np.ndarray, side: int = SIDE) -> str:
    """A data URL of `image` shaded by the attention `weights` [K] over `boxes` [K, 4] (image pixels)."""
    scale = side / max(image.size)
    shown = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.BILINEAR)
    boxes = np.asarray(boxes, np.float32) * scale  # [K, 4] in the shown picture's pixels
    weights = np.asarray(weights, np.float32)
    fig = Figure(figsize=(shown.width / 100, shown.height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    draw_regions(ax, np.asarray(shown), boxes, weights, labels=len(weights) <= 36)
    if len(weights):
        x1, y1, x2, y2 = (float(v) for v in boxes[int(weights.argmax())])
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=2.5, edgecolor="red"))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
