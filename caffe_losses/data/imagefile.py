"""One image file, decoded as Caffe's ReadImageToCVMat does (``cv2.imread``'s decoders),
with the checks Caffe leaves out: a missing file, a folder, a file OpenCV cannot decode,
and a JPEG or PNG file cut short.

libjpeg decodes a JPEG cut short (a copy or download that stopped) without an error: it
prints "Premature end of JPEG file" to stderr, naming no file, and fills the missing
rows with gray. So the file is read once into memory, checked (a JPEG for its
end-of-image marker, a PNG for its IEND chunk: the last bytes, and only when they are not
the marker, a walk over the file's segments, since a JPEG may carry bytes after its end)
and decoded from there with ``cv2.imdecode``, which runs ``cv2.imread``'s decoders, EXIF
orientation included (OpenCV 4.5: the same pixels, tested against ImageData). Other
formats are left to OpenCV.
"""
import os

import numpy as np

JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"\x00\x00\x00\x00IEND\xaeB`\x82"


class ImageError(ValueError):
    """An image file that cannot be used; the message says why and what to do."""


def load_cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError("MultiLabelImageData needs OpenCV's Python module, cv2: install "
                          "Debian's python3-opencv (the OpenCV that Caffe uses, so the pixels "
                          "match ImageData's)")
    return cv2


def read_image(cv2, path, flags):
    """The image at ``path`` decoded as ``cv2.imread(path, flags)`` would: H x W (x C)
    uint8. ImageError when it is missing, a folder, unreadable, cut short or not decodable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        raise ImageError("%r is a folder, not an image file; fix the line or root_folder" % path)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageError("no image file %r (root_folder + path; relative to %s); fix the line "
                         "or root_folder%s" % (path, os.getcwd(), spaces_hint(path)))
    except OSError as exc:
        raise ImageError("cannot read %r: %s; fix the file's permissions or remove the line"
                         % (path, exc.strerror or exc))
    short = cut_short(data)
    if short:
        raise ImageError("%r is cut short: a %s (the file was not copied or downloaded whole); "
                         "replace the file or remove the line" % (path, short))
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    if image is None:
        raise ImageError("OpenCV cannot decode %r (not an image file, or a damaged one); remove "
                         "the line or replace the file" % path)
    return image


def spaces_hint(path):
    if len(path.split()) < 2:
        return ""
    return (" (a path with spaces is everything before the numbers at the end of the line: are "
            "the labels written as numbers, separated by spaces?)")


def cut_short(data):
    """What is missing when the file ``data`` is a JPEG or PNG without its end, else None."""
    if data.startswith(JPEG_START) and not data.endswith(JPEG_END) and not jpeg_complete(data):
        return "JPEG without its end-of-image marker"
    if data.startswith(PNG_START) and not data.endswith(PNG_END) and not png_complete(data):
        return "PNG without its IEND chunk"
    return None


def jpeg_complete(data):
    """Whether the JPEG ``data`` reaches its end-of-image marker (FF D9).

    Markers are FF then a code; a segment's length follows all but the standalone ones
    (D0-D7 restarts, 01); after a start of scan (DA) comes entropy-coded data, in which
    an FF is followed only by 00 (a stuffed byte) or a restart marker, so the next other
    marker ends it.
    """
    pos, end = len(JPEG_START), len(data)
    while pos + 1 < end:
        if data[pos] != 0xFF:  # stray bytes between segments (libjpeg skips them too)
            pos = data.find(b"\xff", pos)
            if pos < 0:
                return False
            continue
        code = data[pos + 1]
        if code == 0xD9:
            return True
        if code == 0xFF:  # a fill byte
            pos += 1
            continue
        if code == 0x01 or 0xD0 <= code <= 0xD7:
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if code == 0xDA:
            pos = scan_end(data, pos)
    return False


def scan_end(data, pos):
    """The position of the marker that ends the entropy-coded data from ``pos``."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        code = data[pos + 1]
        if code != 0x00 and not 0xD0 <= code <= 0xD7:
            return pos
        pos += 2


def png_complete(data):
    """Whether the PNG ``data`` holds its IEND chunk: chunks are a 4-byte length, a
    4-byte type, the data and a 4-byte CRC."""
    pos = len(PNG_START)
    while pos + 8 <= len(data):
        if data[pos + 4:pos + 8] == b"IEND":
            return pos + 12 <= len(data)  # with its CRC
        pos += 12 + int.from_bytes(data[pos:pos + 4], "big")
    return False
