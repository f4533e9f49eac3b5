"""Safe decoding of uploaded images: media type, size and pixel caps checked before decoding.

A 10 MB PNG can expand to billions of pixels, so the dimensions are read from the header
(JPEG SOF, PNG IHDR, WebP VP8/VP8L/VP8X) and checked against the pixel cap before OpenCV
allocates anything.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

__all__ = [
    "SUPPORTED_TYPES",
    "ImageRejected",
    "check_image",
    "decode_checked",
    "decode_image",
    "image_size",
    "sniff_type",
]

SUPPORTED_TYPES = ("image/jpeg", "image/png", "image/webp")
MAX_KEPT_SIDE = 512  # decoded uploads are shrunk to this before they wait for the model


class ImageRejected(ValueError):
    """An upload that is refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def sniff_type(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF segment, walking the segments strictly.

    Strictness is the point: libjpeg resynchronises on stray bytes between segments (it scans on for
    the next ``FF`` marker), so a lenient walker that skips an ``FF 00`` "segment" by a length of its
    own making can be steered past the real SOF onto a decoy hidden inside an APP segment, and the
    pixel cap would check the decoy. Anything but a well-formed marker where one must be is refused.
    """
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # restart markers and TEM carry no length
            i += 2
            continue
        if marker < 0xC0 or marker in (0xD8, 0xD9, 0xDA):
            # stuffing or reserved bytes, a second SOI, EOI or scan data before any frame header:
            # not a JPEG libjpeg would size the way this walker does
            return None
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if length < 8 or i + 9 > len(data):
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def image_size(data: bytes, media_type: str) -> tuple[int, int] | None:
    """(width, height) from the header alone, or None if the header cannot be read."""
    if media_type == "image/png":
        if len(data) >= 24 and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        return None
    if media_type == "image/jpeg":
        return _jpeg_size(data)
    if media_type == "image/webp":
        return _webp_size(data)
    return None


def check_image(data: bytes, declared_type: str | None, max_pixels: int) -> tuple[str, int, int]:
    """Validate an upload from its bytes and header alone: (media type, width, height).

    Raises :class:`ImageRejected` with the right status; cheap enough for the event loop.
    """
    declared = (declared_type or "").split(";")[0].strip().lower()
    if declared and not declared.startswith("image/"):
        raise ImageRejected(415, f"media type {declared!r} is not an image; send {', '.join(SUPPORTED_TYPES)}")
    if declared and declared not in SUPPORTED_TYPES:
        raise ImageRejected(415, f"unsupported image type {declared!r}; send {', '.join(SUPPORTED_TYPES)}")
    if not data:
        raise ImageRejected(400, "empty body: send the image bytes")
    actual = sniff_type(data)
    if actual is None:
        raise ImageRejected(400, "the body is not a decodable JPEG, PNG or WebP image")
    size = image_size(data, actual)
    if size is None:
        raise ImageRejected(400, f"cannot read the {actual} header: the image is truncated or corrupt")
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageRejected(400, f"image has impossible dimensions {w}x{h}")
    if w * h > max_pixels:
        raise ImageRejected(400, f"image is {w}x{h} = {w * h} pixels, over the cap of {max_pixels}")
    return actual, w, h


def decode_checked(data: bytes, media_type: str, max_side: int = MAX_KEPT_SIDE) -> np.ndarray:
    """Decode an upload that passed :func:`check_image` into BGR, shrunk to at most ``max_side``.

    The model sees 32x32 (224x224 for ImageNet) pixels, so keeping a 6000x6000 decode around while the
    request waits would only hold memory; shrinking here bounds what a queued request costs.
    """
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageRejected(400, f"the {media_type} image could not be decoded")
    h, w = image.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return image


def decode_image(data: bytes, declared_type: str | None, max_pixels: int) -> np.ndarray:
    """Check and decode in one call (for callers that are not on an event loop)."""
    media_type, _, _ = check_image(data, declared_type, max_pixels)
    return decode_checked(data, media_type)
