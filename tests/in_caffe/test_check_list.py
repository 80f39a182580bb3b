"""`caffe-losses check-list`: every bad line of a list as file:line with exit 1, the layer's
own verdict on each of them, a clean list, bad keys, and the progress bar on a terminal."""
import os
import pty
import re
import subprocess
import sys

import caffe
import cv2
import numpy as np
import pytest

from nets import make_net
from test_image_data_layer import REPO, ours, write_images


def check_list(*args, stderr=subprocess.PIPE):
    return subprocess.run([sys.executable, "-m", "caffe_losses", "check-list"] + [str(a) for a in args],
                          env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE, stderr=stderr,
                          universal_newlines=True, timeout=120)


# each bad line and what check-list (and the layer) says of it; 0.png to 3.jpg are good
BAD = {
    "missing.png 1": r"no image file '.*/missing.png' \(root_folder \+ path; relative to .*\); fix "
                     r"the line or root_folder",
    "noise.png 2": r"OpenCV cannot decode '.*/noise.png' \(not an image file, or a damaged one\); "
                   r"remove the line or replace the file",
    "cut.jpg 3": r"'.*/cut.jpg' is cut short: a JPEG without its end-of-image marker \(the file was "
                 r"not copied or downloaded whole\); replace the file or remove the line",
    "folder.png 4": r"'.*/folder.png' is a folder, not an image file; fix the line or root_folder",
    "small.png 5": r"image '.*/small.png' is 10 x 30 \(height x width\), smaller than crop_size 12; "
                   r"set new_height and new_width, or a smaller crop_size",
    "0.png 12": r"label 12 is outside \[0, 12\); fix the line or num_classes",
    "1.jpg 2 x": r"no image file '.*/1.jpg 2 x' .*; fix the line or root_folder \(a path with spaces "
                 r"is everything before the numbers at the end of the line: are the labels written as "
                 r"numbers, separated by spaces\?\)",
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("check_list")
    write_images(folder, [(16, 16)] * 4)
    (folder / "noise.png").write_bytes(b"not a picture")
    (folder / "cut.jpg").write_bytes((folder / "1.jpg").read_bytes()[:-50])
    (folder / "folder.png").mkdir()
    cv2.imwrite(str(folder / "small.png"), np.zeros((10, 30, 3), np.uint8))
    good = ["0.png 0", "1.jpg 1", "2.png 2", "3.jpg 3"]
    lines = ["# the good ones, then the bad ones"] + good + [""] + list(BAD)
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_every_bad_line_is_reported_as_file_and_line_with_exit_1(folder):
    result = check_list(folder / "list.txt", "--num-classes", 12, "--root-folder", str(folder) + "/",
                        "--crop-size", 12, "--jobs", 2)
    assert result.returncode == 1, result.stderr
    out = result.stdout.splitlines()
    source = str(folder / "list.txt")
    # the label error first (found as the list is read), then the images in line order
    assert [int(re.match(re.escape(source) + r":(\d+): ", line).group(1))
            for line in out[:-1]] == [12, 7, 8, 9, 10, 11, 13]
    by_line = {int(line.split(":")[1]): line.split(": ", 1)[1] for line in out[:-1]}
    for number, (text, message) in zip([7, 8, 9, 10, 11, 12, 13], BAD.items()):
        assert re.fullmatch(message, by_line[number]), (text, by_line[number])
    assert out[-1] == "%s: 7 of 11 lines cannot be used: fix them before training" % source
    assert result.stderr.splitlines()[-1] == "checked 10 of 10 images, 6 problems"


@pytest.mark.parametrize("number,text", list(enumerate(BAD)))
def test_the_layer_stops_at_each_line_check_list_reports_with_the_same_words(folder, number, text):
    source = folder / ("one_%d.txt" % number)
    source.write_text("0.png 0\n%s\n" % text)
    layer = ours(folder, source=str(source), batch_size=2, crop_size=12, threads=1)
    with pytest.raises(ValueError) as info:
        make_net(layer, caffe.TEST).forward()
    assert str(info.value).startswith("MultiLabelImageData: %s line 2" % source)
    assert re.fullmatch(BAD[text], info.value.problem)


def test_a_usable_list_passes_with_plain_progress_lines_off_a_terminal(folder):
    (folder / "good.txt").write_text("0.png 0\n1.jpg 1 4\n2.png 2\n3.jpg 3\n")
    result = check_list(folder / "good.txt", "--num-classes", 12, "--root-folder", str(folder) + "/",
                        "--new-height", 20, "--new-width", 20, "--crop-size", 18, "--gray")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "%s: 4 images, every one usable\n" % (folder / "good.txt")
    assert result.stderr.splitlines()[-1] == "checked 4 of 4 images, 0 problems"


def test_images_of_another_size_than_the_first_are_reported_when_nothing_resizes(folder):
    (folder / "sizes.txt").write_text("0.png 0\nsmall.png 1\n2.png 2\n")
    result = check_list(folder / "sizes.txt", "--num-classes", 12, "--root-folder", str(folder) + "/")
    assert result.returncode == 1
    assert re.match(r".*sizes.txt:2: image '.*/small.png' is 10 x 30 \(height x width\) but the first "
                    r"image is 16 x 16, and the data top has one shape", result.stdout)


@pytest.mark.parametrize("args,message", [
    (["--new-height", 20], "set new_height and new_width together"),
    (["--new-height", 20, "--new-width", 10, "--crop-size", 12],
     r"crop_size 12 is larger than the resized image, 20 x 10"),
    (["--num-classes", 0], "param_str key 'num_classes' must be >= 1, got 0"),
])
def test_bad_keys_are_one_line_in_the_layers_words_with_exit_1(folder, args, message):
    args = ["--num-classes", 12] + args if "--num-classes" not in args else args
    result = check_list(folder / "list.txt", *args)
    assert result.returncode == 1 and result.stdout == ""
    assert re.fullmatch(r"caffe-losses check-list: MultiLabelImageData: .*%s.*\n" % message,
                        result.stderr), result.stderr


def test_a_missing_list_file_is_one_line_with_exit_1(tmp_path):
    result = check_list(tmp_path / "nope.txt", "--num-classes", 3)
    assert result.returncode == 1
    assert re.fullmatch(r"caffe-losses check-list: MultiLabelImageData: cannot read the list file "
                        r"'.*nope.txt' \(source\): No such file or directory; .*\n", result.stderr)


def test_on_a_terminal_progress_is_a_bar(folder):
    main, terminal = pty.openpty()
    try:
        result = check_list(folder / "list.txt", "--num-classes", 12, "--root-folder", str(folder) + "/",
                            stderr=terminal)
        os.close(terminal)
        terminal = None
        shown = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(main)
        if terminal is not None:
            os.close(terminal)
    assert result.returncode == 1
    assert re.search(rb"\r100%[^\r\n]* 10/10 \[", shown), shown[-500:]
    assert b"checked" not in shown
