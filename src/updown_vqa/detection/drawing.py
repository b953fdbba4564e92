"""Draw the C4 detector's regions on an image with "attribute class" labels, as the bottom-up
attention demo does (a box's attribute is shown when its probability passes a threshold)."""

from __future__ import annotations

import numpy as np
import torch

from updown_vqa.core.errors import UpdownError
from updown_vqa.detection.c4_regions import C4RegionExtractor
from updown_vqa.features.images import load_rgb


def region_labels(labels: dict, object_names: list[str] | None, attribute_names: list[str] | None,
                  attribute_threshold: float = 0.1) -> list[str]:
    """'attribute class' per box (names from the vocabularies, else class / attribute numbers)."""
    out = []
    for k, object_id in enumerate(labels["object_ids"].tolist()):
        name = object_names[object_id] if object_names else f"class {object_id}"
        if float(labels["attribute_scores"][k]) > attribute_threshold:
            attribute = int(labels["attribute_ids"][k])
            name = f"{attribute_names[attribute] if attribute_names else f'attr {attribute}'} {name}"
        out.append(name)
    return out


def detection_figure(path: str, extractor: C4RegionExtractor, object_names=None, attribute_names=None):
    """A matplotlib figure of the image at `path` with its selected regions and their labels."""
    import matplotlib.pyplot as plt

    try:
        image = load_rgb(path)
    except Exception as e:  # PIL raises many kinds for a file that is not an image
        raise UpdownError(f"image={path}: cannot decode it as an image ({type(e).__name__}: {e})") from None
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    [(boxes, _, labels)] = extractor([pixels], [image.size], [0])
    names = region_labels(labels, object_names, attribute_names)
    fig, ax = plt.subplots(figsize=(image.size[0] / 80, image.size[1] / 80))
    ax.imshow(image)
    for (x1, y1, x2, y2), name in zip(boxes.tolist(), names):
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="red", linewidth=2))
        ax.text(x1, y1 - 2, name, fontsize=8, color="white", bbox={"facecolor": "blue", "alpha": 0.5})
    ax.axis("off")
    return fig, names
