"""What the demo page asks of a checkpoint: load it once, list the data's images, and answer (or
caption) one image with the same inference code as `answer` (vqa.inference.ask_image)."""

from __future__ import annotations

import io
import logging
import os
import shlex
import threading

import numpy as np

from updown_vqa.captioning.inference import caption_image, load_captioner
from updown_vqa.core.checkpointing import checkpoint_task, read_checkpoint
from updown_vqa.core.errors import UpdownError
from updown_vqa.demo.drawing import attention_png
from updown_vqa.demo.uploads import RequestError, check_question, decode_upload, open_upload
from updown_vqa.features.images import list_images, load_rgb
from updown_vqa.features.loading import StoreSet
from updown_vqa.vqa.inference import ask_image, load_vqa_model

log = logging.getLogger(__name__)


class Demo:
    """A checkpoint (VQA or captioning) and the images the page offers; `ask` serves one request."""

    def __init__(self, ckpt: str, images: str | None = None, features: str | None = None,
                 weights: str | None = None, device: str | None = None, num_images: int = 24,
                 top_k: int = 5, max_upload_mb: float = 20, max_pixels: int = 25_000_000,
                 max_question_chars: int = 300):
        self.ckpt, self.weights, self.device, self.top_k = str(ckpt), weights, device, top_k
        self.kind = checkpoint_task(read_checkpoint(self.ckpt, mmap=True, key="ckpt"))
        if self.kind not in ("vqa", "caption"):
            raise UpdownError(f"ckpt={ckpt}: not a VQA or captioning checkpoint of python -m updown_vqa.train")
        load = load_vqa_model if self.kind == "vqa" else load_captioner
        self.model = load(self.ckpt, device).eval()
        self.limits = {"max_upload_bytes": int(max_upload_mb * 2**20), "max_pixels": int(max_pixels),
                       "max_question_chars": int(max_question_chars)}
        found = list_images(images) if images and os.path.isdir(images) else {}
        self.images = dict(sorted(found.items())[:num_images])  # image id -> path
        self.features = features if features and os.path.isfile(features) else None
        self.lock = threading.Lock()  # one request at a time uses the model
        log.info("demo of %s checkpoint %s: %d data images from %s", self.kind, ckpt, len(self.images), images)

    def info(self) -> dict:
        """What the page needs to draw itself."""
        return {"kind": self.kind, "ckpt": os.path.basename(self.ckpt), "images": list(self.images),
                "limits": self.limits}

    def ask(self, payload: dict) -> dict:
        """Answer (VQA) or caption one request: {"question", and "image_id" (a data image) or
        "upload" (an image file in base64)}."""
        question = check_question(payload.get("question"), self.limits["max_question_chars"]) \
            if self.kind == "vqa" else ""
        image, source, boxes, name = self._image(payload)
        with self.lock:  # the model, and matplotlib, one request at a time
            if self.kind == "caption":
                found = caption_image(self.model, source, boxes, self.weights, self.device, f"ckpt={self.ckpt}")
                return {"kind": "caption", "caption": " ".join(found["words"]),
                        "regions": self._regions(len(found["boxes"]), boxes is not None),
                        "words": [{"word": w, "attention": attention_png(image, found["boxes"], weights)}
                                  for w, weights in zip(found["words"], found["attention"])]}
            found = ask_image(self.model, source, question, boxes, self.top_k, self.weights, self.device,
                              f"ckpt={self.ckpt}")
            return self._vqa_result(found, question, image, boxes, name)

    def _vqa_result(self, found: dict, question: str, image, boxes, name: str) -> dict:
        """What the page shows of `ask_image`'s answer."""
        regions = self._regions(len(found["boxes"]), boxes is not None)
        strongest = int(np.argmax(found["attention"]))
        return {"kind": "vqa", "question": question, "regions": regions,
                "answers": [{"answer": a, "score": round(s, 5)} for a, s in found["answers"]],
                "tokens": found["tokens"], "attention": attention_png(image, found["boxes"], found["attention"]),
                "strongest": {"box": [round(float(v), 1) for v in found["boxes"][strongest]],
                              "weight": round(float(found["attention"][strongest]), 4)},
                "command": self._command(name, question, boxes)}

    def _image(self, payload: dict):
        """(RGB image, what the features read, stored boxes or None, file name) of the request."""
        if payload.get("upload") is not None:
            data = decode_upload(payload["upload"], self.limits["max_upload_bytes"])
            return open_upload(data, self.limits["max_pixels"]), io.BytesIO(data), None, "UPLOADED_IMAGE"
        image_id = payload.get("image_id")
        if not isinstance(image_id, int) or image_id not in self.images:
            raise RequestError(f"image_id={image_id!r} is not one of the page's images; pick one or upload one")
        path = self.images[image_id]
        return load_rgb(path), path, self._stored_boxes(image_id), path

    def _regions(self, count: int, stored: bool) -> str:
        """What the attention is over, in words."""
        if stored:
            return f"{count} regions of the feature store"
        extractor = (self.model.hparams.get("feature_attrs") or {}).get("extractor")
        return f"{count} detected regions" if extractor == "regions" else f"{count} grid cells of the trunk"

    def _stored_boxes(self, image_id: int):
        """The image's regions in the feature store (features of mode boxes), else None: the recipe's own."""
        attrs = self.model.hparams.get("feature_attrs") or {}
        if self.features is None or attrs.get("extractor") != "boxes":
            return None
        try:
            read = StoreSet([self.features]).read([image_id], f"image_id={image_id}")
        except UpdownError:
            return None
        return np.asarray(read["boxes"][0, : int(read["num_boxes"][0])]).tolist()

    def _command(self, image: str, question: str, boxes) -> str:
        """The `answer` command that gives the same answers."""
        words = ["python", "-m", "updown_vqa.answer", f"ckpt={self.ckpt}", f"image={image}", f"question={question}"]
        if boxes is not None:
            words.append("boxes=[" + ",".join("[" + ",".join(f"{float(v):g}" for v in b) + "]" for b in boxes) + "]")
        if self.weights:
            words.append(f"weights={self.weights}")
        return shlex.join(words)
