"""What one input file may cost a task, checked before anything is decoded: the bytes read
into memory and the pixels its header declares.

A 1 KB JPEG whose header claims 30000 x 30000 makes a decoder allocate gigabytes; a file is
therefore measured by its header (simplejpeg for JPEG, Pillow's lazy open for the rest, neither
of which decodes pixels) and passed by, as an `UnreadableImage` with its reason, when it is
over spec.dataset.maxImagePixels.
"""

from __future__ import annotations

import io
import warnings

import simplejpeg
from PIL import Image

from lth_spark.images import UnreadableImage

BYTES_PER_PIXEL = 4
"""An image file larger than this per pixel of the cap is not an image within the cap
(uncompressed RGBA is 4): it is passed by unread."""
MIN_FILE_BYTES = 1 << 20


def max_file_bytes(max_pixels: int) -> int:
    """The largest input file a task reads into memory."""
    return max(MIN_FILE_BYTES, BYTES_PER_PIXEL * max_pixels)


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file's header alone; None when no reader knows the file."""
    if data[:2] == b"\xff\xd8":
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return int(width), int(height)
        except ValueError:
            pass  # CMYK and other JPEGs simplejpeg refuses: Pillow reads their header below
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # lazy: the header only
                width, height = image.size
                return int(width), int(height)
    except Image.DecompressionBombError as error:
        raise UnreadableImage(f"refused by Pillow's decompression-bomb check ({error})") from None
    except Exception:  # not an image Pillow knows: the decoder says why
        return None


def refuse_oversized(data: bytes, max_pixels: int) -> None:
    """An `UnreadableImage` when the header declares more than `max_pixels` pixels."""
    size = header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise UnreadableImage(
            f"{size[0]} x {size[1]} pixels, more than spec.dataset.maxImagePixels ({max_pixels}): not decoded"
        )
