"""Untrusted request input: the JSON body, the question and the uploaded image, checked before any of
it reaches a model. Nothing here writes a file or unpickles anything: an upload stays in memory."""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings

from PIL import Image, UnidentifiedImageError

from updown_vqa.core.errors import UpdownError
from updown_vqa.features.images import load_rgb

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")


class RequestError(UpdownError):
    """A request the demo refuses, with the HTTP status to answer it with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_body(body: bytes) -> dict:
    """The JSON object of an /api/ask request."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError("the request is not JSON; send {\"question\": ..., \"image_id\" or \"upload\": ...}") from None
    if not isinstance(payload, dict):
        raise RequestError("the request must be a JSON object")
    return payload


def check_question(question, max_chars: int) -> str:
    """The question, stripped; refused when missing, empty or longer than `max_chars`."""
    if not isinstance(question, str) or not question.strip():
        raise RequestError("type a question first")
    question = question.strip()
    if len(question) > max_chars:
        raise RequestError(f"the question is {len(question)} characters long; ask in at most {max_chars}")
    return question


def decode_upload(data: str, max_bytes: int) -> bytes:
    """The bytes of a base64 upload (a data: URL prefix allowed), refused beyond `max_bytes`."""
    if not isinstance(data, str):
        raise RequestError("upload must be the image file's bytes in base64")
    data = data.partition(",")[2] if data.startswith("data:") else data
    if len(data) * 3 // 4 > max_bytes:
        raise RequestError(f"the upload is larger than {max_bytes / 2**20:.0f} MB; send a smaller image", 413)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("upload is not valid base64 of an image file") from None


def open_upload(data: bytes, max_pixels: int) -> Image.Image:
    """The uploaded image decoded as RGB, after its header shows an allowed format and at most
    `max_pixels` pixels (a larger image is refused before its pixels are decoded)."""
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise RequestError(f"the upload is not an image file this demo reads ({', '.join(FORMATS)})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise RequestError(f"the image is {width} x {height} = {width * height / 1e6:.1f} megapixels; "
                           f"this demo takes at most {max_pixels / 1e6:.1f}", 413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
        return load_rgb(io.BytesIO(data))  # as the features see it: transparency on white
    except Exception as e:  # truncated or corrupt data: PIL raises OSError, SyntaxError, ValueError...
        raise RequestError(f"the image could not be decoded ({type(e).__name__}: {str(e)[:120]}); "
                           "upload a whole, valid image file") from None
