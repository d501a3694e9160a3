"""Cheap completeness checks of PNG / JPEG files (no heavy imports: used by the converters).

OpenCV decodes a truncated JPEG or PNG partly without an error (the missing rows come out
grey or black), so a cut-off download or an interrupted copy would be trained on. A complete
PNG ends with its ``IEND`` chunk and a complete JPEG with the ``EOI`` marker.
"""
from __future__ import annotations

import io
import os

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
PNG_END = b'IEND\xaeB`\x82'
JPEG_MAGIC = b'\xff\xd8'
JPEG_END = b'\xff\xd9'
_PADDING = b'\x00\r\n '


def incomplete_reason(data: bytes) -> str | None:
    """Why the image bytes ``data`` are not a complete PNG / JPEG file, or None.

    The fast test is the end marker; a file without it is decoded strictly with Pillow
    (which, unlike OpenCV, refuses truncated data), so a complete image followed by extra
    bytes still passes. Other formats are left to the decoder.
    """
    if not data:
        return 'the file is empty'
    if data.startswith(PNG_MAGIC):
        if data.endswith(PNG_END):
            return None
    elif data.startswith(JPEG_MAGIC):
        if data.rstrip(_PADDING).endswith(JPEG_END):
            return None
    else:
        return None
    from PIL import Image, ImageFile
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # somebody allowed truncated files globally
        return 'the file is truncated (no end-of-image marker)'
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure means unusable
        return f'the file is truncated or corrupt ({type(exc).__name__}: {exc})'
    return None


def is_complete_output(path: str) -> bool:
    """Whether ``path`` (a PNG or JPEG this project wrote) exists, is non-empty and complete.

    Reads only the first and last bytes (the writers here always end a file with its end
    marker); other extensions only need to be non-empty.
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            return False
        with open(path, 'rb') as f:
            head = f.read(8)
            f.seek(max(0, size - 32))
            tail = f.read()
    except OSError:
        return False
    ext = os.path.splitext(path)[1].lower()
    if ext == '.png':
        return head == PNG_MAGIC and tail.endswith(PNG_END)
    if ext in ('.jpg', '.jpeg'):
        return head.startswith(JPEG_MAGIC) and tail.rstrip(_PADDING).endswith(JPEG_END)
    return True
