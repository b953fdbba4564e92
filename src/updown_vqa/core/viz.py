"""Pictures of what an Up-Down model looks at: each region shaded by its top-down attention weight.

As the figures of Anderson et al. 2018 (https://arxiv.org/abs/1707.07998): the image is darkened
except where attention falls, each pixel as bright as the summed weight of the regions covering it.
Every function returns a matplotlib Figure, which a notebook shows inline; scripts save it
(`fig.savefig(path)`) under the Agg backend. Boxes are [K, 4] pixels x1 y1 x2 y2, weights [K].
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

DARKEST = 0.2  # brightness of pixels no region covers, as a fraction of the original
LABELLED = 3   # regions whose weight is written on the picture (the largest)


def load_image(image) -> np.ndarray:
    """An image path, PIL image or array as RGB uint8 [H, W, 3]."""
    if isinstance(image, np.ndarray):
        return image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    with image if isinstance(image, Image.Image) else Image.open(image) as opened:
        return np.asarray(opened.convert("RGB"))


def attention_heat(boxes: np.ndarray, weights: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W] summed weight of the boxes covering each pixel, scaled so that its maximum is 1."""
    heat = np.zeros((height, width), np.float32)
    for (x1, y1, x2, y2), weight in zip(np.asarray(boxes, np.float32), np.asarray(weights, np.float32)):
        x1, y1 = max(0, math.floor(x1)), max(0, math.floor(y1))
        heat[y1 : max(y1, math.ceil(y2)), x1 : max(x1, math.ceil(x2))] += weight
    return heat / heat.max() if heat.max() > 0 else heat


def draw_regions(ax, image, boxes, weights, labels: bool = True) -> None:
    """The image shaded by attention on `ax`, the boxes outlined as brightly as their weight."""
    pixels = load_image(image)
    heat = attention_heat(boxes, weights, *pixels.shape[:2])  # [H, W]
    ax.imshow((pixels * (DARKEST + (1 - DARKEST) * heat[..., None])).astype(np.uint8))
    weights = np.asarray(weights, np.float32)
    largest = weights.max() if len(weights) and weights.max() > 0 else 1.0
    for k in np.argsort(-weights):
        x1, y1, x2, y2 = (float(v) for v in boxes[k])
        strength = float(weights[k] / largest)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=0.5 + 1.5 * strength,
                               edgecolor=(1.0, 0.85, 0.0, 0.25 + 0.75 * strength)))
    for k in np.argsort(-weights)[:LABELLED] if labels else []:
        ax.text(float(boxes[k][0]) + 1, float(boxes[k][1]) + 1, f"{weights[k]:.2f}", fontsize=7,
                va="top", color="black", bbox={"facecolor": "yellow", "alpha": 0.8, "pad": 1, "lw": 0})
    ax.set_axis_off()


def show_attention(image, boxes, weights, question: str = "", answers: Sequence[tuple[str, float]] = (),
                   ground_truth: Sequence[str] = (), title: str | None = None) -> Figure:
    """The image with its regions shaded by attention, beside the question, the top answers with their
    scores (green: given by a human annotator) and the ground-truth answers."""
    fig = Figure(figsize=(9, 4.2))
    image_ax, answers_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    draw_regions(image_ax, image, np.asarray(boxes), np.asarray(weights))
    if title:
        image_ax.set_title(title, fontsize=9)
    truth = Counter(ground_truth)
    if answers:
        names, scores = zip(*answers)
        colors = ["tab:green" if name in truth else "tab:gray" for name in names]
        answers_ax.barh(range(len(names))[::-1], scores, color=colors)
        answers_ax.set_yticks(range(len(names))[::-1], names)
        answers_ax.set_xlim(0, 1)
        answers_ax.set_xlabel("score (sigmoid)")
    else:
        answers_ax.set_axis_off()
    answers_ax.set_title(question, fontsize=11, loc="left")
    if truth:
        listed = ", ".join(f"{a} x{n}" if n > 1 else a for a, n in truth.most_common())
        answers_ax.text(0, -0.22, f"ground truth: {listed}", transform=answers_ax.transAxes, fontsize=9)
    fig.tight_layout()
    return fig


def show_caption_attention(image, boxes, words: Sequence[str], attention, columns: int = 5,
                           title: str | None = None) -> Figure:
    """One small panel per generated word: the image shaded by the attention [L, K] at that word."""
    attention = np.asarray(attention, np.float32)
    rows = max(1, math.ceil(len(words) / columns))
    fig = Figure(figsize=(2.2 * columns, 2.4 * rows + 0.4))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    pixels = load_image(image)
    for ax, word, weights in zip(axes, words, attention):
        draw_regions(ax, pixels, np.asarray(boxes), weights, labels=False)
        ax.set_title(word, fontsize=10)
    for ax in axes[len(words):]:
        ax.set_axis_off()
    fig.suptitle(title or " ".join(words), fontsize=10)
    fig.tight_layout()
    return fig


def accuracy_bars(groups: dict[str, dict[str, float]], title: str = "VQA accuracy (%)") -> Figure:
    """One bar chart per grouping ({"template": {"color": 71.2, ...}, "answer type": {...}})."""
    fig = Figure(figsize=(4.5 * len(groups), 3.4))
    for ax, (grouping, accuracies) in zip(np.atleast_1d(fig.subplots(1, len(groups))), groups.items()):
        names = list(accuracies)
        bars = ax.bar(names, [accuracies[n] for n in names], color="tab:blue")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set(ylim=(0, 105), title=f"by {grouping}", ylabel=title)
        ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    return fig


def figure(picture: dict):
    """The matplotlib Figure of a `vqa_picture` or `caption_picture`."""
    if picture["kind"] == "caption":
        return show_caption_attention(picture["image"], picture["boxes"], picture["words"],
                                      picture["attention"],
                                      title=f"image {picture['image_id']}: {' '.join(picture['words'])}")
    return show_attention(picture["image"], picture["boxes"], picture["weights"], picture["question"],
                          picture["answers"], picture["ground_truth"],
                          title=f"question {picture['question_id']}, image {picture['image_id']}")
