"""MultiLabelImageData's list file as editors write it (BOM, CRLF, comments, paths with
spaces) and its check for JPEG and PNG files cut short, without Caffe or OpenCV.
(Real encoders' files and the errors in a net: tests/in_caffe/test_image_data_layer.py.)"""
import pickle
import zlib

import numpy as np
import pytest

from caffe_losses.data.imagefile import cut_short, jpeg_complete, png_complete
from caffe_losses.data.listfile import ImageList


def write_bytes(tmp_path, data, name="list.txt"):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def rows(images):
    out = np.zeros((len(images), images.num_classes), np.float32)
    images.fill_labels(np.arange(len(images)), out)
    return out.tolist()


# -- the list file ------------------------------------------------------------------------

def test_a_bom_and_windows_line_ends_are_read_as_editors_write_them(tmp_path):
    plain = ImageList(write_bytes(tmp_path, b"a.png 1\nb.png 0 2\n", "plain.txt"), num_classes=3)
    notepad = ImageList(write_bytes(tmp_path, b"\xef\xbb\xbfa.png 1\r\nb.png 0 2\r\n"), num_classes=3)
    assert notepad.paths == plain.paths == ["a.png", "b.png"]
    assert rows(notepad) == rows(plain) == [[0, 1, 0], [1, 0, 1]]


def test_hash_lines_are_comments_and_line_numbers_still_count_them(tmp_path):
    text = b"# made by export.py\na.png 1\n   # b.png 2 (left out)\n\nc.png 0\n"
    images = ImageList(write_bytes(tmp_path, text), num_classes=3)
    assert images.paths == ["a.png", "c.png"] and images.lines == [2, 5]
    with pytest.raises(ValueError, match=r"list.txt' \(source\) has no image lines"):
        ImageList(write_bytes(tmp_path, b"# a.png 1\n#b.png 2\n"), num_classes=3)


@pytest.mark.parametrize("labels,line,path,row", [
    ("sparse", "my photos/cat 1.jpg 2 0", "my photos/cat 1.jpg", [1, 0, 1]),
    ("sparse", "two  spaces\tand a tab.png 1", "two  spaces\tand a tab.png", [0, 1, 0]),
    ("sparse", "no labels here.png", "no labels here.png", [0, 0, 0]),
    ("sparse", "123 2", "123", [0, 0, 1]),  # the first field is always the path's
    ("dense", "my photos/cat 1.jpg 0 0.5 1", "my photos/cat 1.jpg", [0, 0.5, 1]),
    ("dense", "x 7.png -1 1 0", "x 7.png", [-1, 1, 0]),
])
def test_the_labels_are_the_numbers_at_the_end_and_the_path_is_the_rest(tmp_path, labels, line,
                                                                       path, row):
    images = ImageList(write_bytes(tmp_path, line.encode() + b"\n"), num_classes=3, labels=labels)
    assert images.paths == [path] and rows(images) == [row]


@pytest.mark.parametrize("labels,line,message", [
    # a path cannot end in a number: the count of numbers at the end says what is wrong
    ("dense", "scan 12 0 1 0", r"line 1 has 4 labels; with labels 'dense' give one number per "
                              r"class, num_classes = 3"),
    ("sparse", "a b.png 1 7", r"line 1: label 7 is outside \[0, 3\)"),
])
def test_a_path_ending_in_a_number_is_read_as_labels_and_said_so(tmp_path, labels, line, message):
    with pytest.raises(ValueError, match="MultiLabelImageData: .*list.txt " + message):
        ImageList(write_bytes(tmp_path, line.encode() + b"\n"), num_classes=3, labels=labels)


def test_a_list_that_is_not_utf8_names_its_line(tmp_path):
    with pytest.raises(ValueError, match=r"MultiLabelImageData: .*list.txt line 2 is not UTF-8 text "
                                         r"\(invalid continuation byte\); save the list file as UTF-8"):
        ImageList(write_bytes(tmp_path, b"a.png 1\ncaf\xe9.png 2\n"), num_classes=3)


def test_line_errors_keep_file_line_and_problem_apart_and_survive_pickling(tmp_path):
    source = write_bytes(tmp_path, b"a.png 1\nb.png 9\nc.png x 1\n")
    problems = []
    images = ImageList(source, num_classes=3, problems=problems)
    assert images.paths == ["a.png", "c.png x"] and len(problems) == 1  # 'x' is part of the path
    exc = pickle.loads(pickle.dumps(problems[0]))
    assert type(exc) is ValueError and (exc.source, exc.line) == (source, 2)
    assert exc.problem == "label 9 is outside [0, 3); fix the line or num_classes"


# -- JPEG and PNG files cut short -----------------------------------------------------------

def segment(code, payload):
    return bytes([0xFF, code]) + (len(payload) + 2).to_bytes(2, "big") + payload


# an Exif segment holding a thumbnail (a whole JPEG, end marker included) before the image
THUMBNAIL = b"\xff\xd8" + segment(0xDB, bytes(65)) + b"\xff\xd9"
JPEG = (b"\xff\xd8" + segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
        + segment(0xE1, b"Exif\x00\x00" + THUMBNAIL) + segment(0xDB, bytes(65))
        + segment(0xDA, bytes(6))
        + b"\x12\x34\xff\x00\x56\xff\xd0\x78\x9a\xff\x00\xbc"  # a stuffed FF, a restart marker
        + segment(0xDA, bytes(6)) + b"\xde\xad\xff\x00\xbe\xef"  # a second scan (progressive)
        + b"\xff\xd9")


def png_chunk(kind, payload):
    return (len(payload).to_bytes(4, "big") + kind + payload
            + zlib.crc32(kind + payload).to_bytes(4, "big"))


PNG = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", bytes(13)) + png_chunk(b"IDAT", b"IEND" * 8)
       + png_chunk(b"IEND", b""))


def test_a_whole_jpeg_reaches_its_end_marker_past_a_thumbnail_and_trailing_bytes():
    assert jpeg_complete(JPEG)
    assert jpeg_complete(JPEG + b"\x00" * 64 + b"appended video \xff\xd8")
    assert jpeg_complete(JPEG[:-2] + b"\xff\xff\xff\xd9")  # fill bytes before the marker


def test_a_jpeg_cut_anywhere_before_its_end_marker_is_incomplete():
    assert not any(jpeg_complete(JPEG[:cut]) for cut in range(2, len(JPEG)))


def test_a_png_is_complete_with_its_whole_iend_chunk_only():
    assert png_complete(PNG) and png_complete(PNG + b"trailing")
    # 'IEND' inside the image data is not the chunk
    assert not any(png_complete(PNG[:cut]) for cut in range(8, len(PNG)))


def test_cut_short_names_what_is_missing_and_leaves_other_formats_to_opencv():
    assert cut_short(JPEG) is None and cut_short(JPEG + b"tail") is None
    assert cut_short(JPEG[:-40]) == "JPEG without its end-of-image marker"
    assert cut_short(PNG) is None and cut_short(PNG + b"tail") is None
    assert cut_short(PNG[:-5]) == "PNG without its IEND chunk"
    assert cut_short(b"BM" + bytes(60)) is None and cut_short(b"") is None
