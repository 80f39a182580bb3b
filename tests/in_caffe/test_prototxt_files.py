"""The prototxt tool on the files people give it: empty or comment-only files, comments in
Latin-1 or GBK (which Caffe reads), a binary file, every kind of bad -o (a folder, a missing
folder, an unwritable place, the input itself), and check on Python layers that Caffe could
not load. Each problem is one line naming the file, a non-zero exit, nothing written."""
import os

import caffe
import numpy as np
import pytest

from caffe_losses import cli
from test_prototxt_tool import parse, python_losses

NET = """name: "Small"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 4 } shape { dim: 2 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""
SWAP = ["swap", "NET", "--to", "SoftmaxFocalLoss"]
COMMANDS = {"swap": SWAP, "deploy": ["deploy", "NET"], "check": ["check", "NET"]}


def run(args, path, capsys):
    code = cli.main([str(path) if a == "NET" else a for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code, out, err, expected=None):
    assert code > 0 and not out and err.count("\n") == 1 and "Traceback" not in err, (code, out, err)
    if expected is not None:
        assert err == expected + "\n"
    return err.strip()


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("text, what", [("", "is empty"), ("\n  \n", "is empty"),
                                        ("# a net, one day\n\n   # nothing yet\n", "holds only comments")])
def test_an_empty_or_comment_only_file_is_named_as_such(command, text, what, tmp_path, capsys):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    one_line(*run(COMMANDS[command], path, capsys), expected="caffe-losses: %s %s" % (path, what))


def test_a_binary_file_is_not_a_text_file(tmp_path, capsys):
    path = tmp_path / "net.caffemodel"
    path.write_bytes(b"\n\x05conv1\x12\x00\x1a\x04\x00\x00\x80\x3f")
    one_line(*run(["check", "NET"], path, capsys),
             expected="caffe-losses: %s: not a text file (a binary .caffemodel or .solverstate?)" % path)


@pytest.mark.parametrize("encoding, comment", [("latin-1", "# réseau d'été: données normalisées\n"),
                                               ("gbk", "# 分类网络，标签从零开始\n")])
def test_comments_in_latin1_or_gbk_are_read_as_caffe_reads_them(encoding, comment, tmp_path, capsys):
    text = comment + NET.replace('top: "loss" }', 'top: "loss" }  ' + comment.strip())
    path = tmp_path / "net.prototxt"
    path.write_bytes(text.encode(encoding))
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")
    caffe.Net(str(path), caffe.TRAIN)  # Caffe reads it
    code, out, err = run(SWAP, path, capsys)
    assert code == 0 and err == ""
    assert python_losses(out) == {"loss": ("SoftmaxFocalLoss", [1.0], "loss")}
    (tmp_path / "utf8.prototxt").write_text(NET)
    assert run(SWAP, tmp_path / "utf8.prototxt", capsys)[1] == out


def test_a_quoted_string_that_is_not_utf8_is_named_with_its_line(tmp_path, capsys):
    path = tmp_path / "net.prototxt"
    path.write_bytes(NET.replace('name: "fc"', 'name: "couche_é"').encode("latin-1"))
    line = one_line(*run(SWAP, path, capsys))
    assert line.startswith("caffe-losses: %s:4:15: " % path)
    assert "a quoted string that is not UTF-8 (Latin-1 or GBK bytes?): re-encode the file as UTF-8" in line


def unwritable_folder(tmp_path):
    """A folder where no file can be made, even by root: a read-only one, or /sys."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    for candidate in (folder, "/sys"):
        try:
            open(os.path.join(str(candidate), "probe"), "w").close()
        except OSError:
            return str(candidate)
        os.remove(os.path.join(str(candidate), "probe"))
    pytest.fail("no unwritable folder to test with")


@pytest.mark.parametrize("command", ["swap", "deploy"])
@pytest.mark.parametrize("where", ["folder", "missing_folder", "unwritable"])
def test_every_bad_output_path_is_one_line_and_writes_nothing(command, where, tmp_path, capsys):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    target = {"folder": str(tmp_path),
              "missing_folder": str(tmp_path / "nowhere" / "out.prototxt"),
              "unwritable": os.path.join(unwritable_folder(tmp_path), "out.prototxt")}[where]
    before = sorted(os.listdir(str(tmp_path)))
    line = one_line(*run(COMMANDS[command] + ["-o", target], path, capsys))
    expected = {"folder": "caffe-losses: -o %s is a folder; give a file name" % target,
                "missing_folder": "caffe-losses: -o %s: there is no folder %s" % (target, os.path.dirname(target)),
                "unwritable": "caffe-losses: -o %s: cannot write there (" % target}[where]
    assert line.startswith(expected)
    assert sorted(os.listdir(str(tmp_path))) == before and path.read_text() == NET


def test_output_to_the_input_file_replaces_it_only_when_the_command_succeeds(tmp_path, capsys):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    path.chmod(0o640)
    one_line(*run(SWAP + ["--layer", "fc", "-o", str(path)], path, capsys),
             expected="caffe-losses swap: --layer fc: 'fc' (InnerProduct, top 'fc') is not a loss layer")
    assert path.read_text() == NET
    code, out, err = run(SWAP + ["-o", str(path)], path, capsys)
    assert code == 0 and out == "" and err == ""
    assert python_losses(path.read_text()) == {"loss": ("SoftmaxFocalLoss", [1.0], "loss")}
    assert (path.stat().st_mode & 0o777) == 0o640 and os.listdir(str(tmp_path)) == ["net.prototxt"]


PYTHON_LAYERS = NET.replace('layer { name: "loss"', """layer { name: "misspelled" type: "Python" bottom: "fc" bottom: "label"
  top: "focal" loss_weight: 1 python_param { module: "caffe_loss" layer: "SoftmaxFocalLoss" } }
layer { name: "not_installed" type: "Python" top: "extra"
  python_param { module: "voc_layers_not_installed" layer: "VOCSegDataLayer" } }
layer { name: "no_such_layer" type: "Python" bottom: "fc" top: "out"
  python_param { module: "test_prototxt_files" layer: "Nope" } }
layer { name: "loss\"""")


def test_check_reports_python_layers_caffe_could_not_load(tmp_path, capsys):
    path = tmp_path / "net.prototxt"
    path.write_text(PYTHON_LAYERS)
    code, out, err = run(["check", "NET"], path, capsys)
    assert code == 1 and err == ""
    lines = [l for l in out.splitlines() if ": warning: " not in l]  # OpenCV's, tested apart
    assert len(lines) == 3
    assert lines[0].startswith("%s: layer 'misspelled' (Python): module 'caffe_loss' does not import "
                               "(ModuleNotFoundError: No module named 'caffe_loss'); did you mean "
                               "'caffe_losses'?" % path)
    assert lines[1].startswith("%s: layer 'not_installed' (Python): module 'voc_layers_not_installed' "
                               "does not import" % path) and lines[1].endswith("; put its folder on PYTHONPATH")
    assert lines[2] == "%s: layer 'no_such_layer' (Python): module 'test_prototxt_files' has no layer 'Nope'" % path


def test_check_reports_a_net_without_layers(tmp_path, capsys):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "nothing"\n')
    assert run(["check", "NET"], path, capsys) == (1, "%s: the net has no layers\n" % path, "")


def test_swap_output_builds_in_caffe_after_a_latin1_round_trip(tmp_path, capsys):
    path = tmp_path / "net.prototxt"
    path.write_bytes(("# schéma\n" + NET).encode("latin-1"))
    out_path = tmp_path / "out.prototxt"
    assert run(SWAP + ["-o", str(out_path)], path, capsys)[0] == 0
    net = caffe.Net(str(out_path), caffe.TRAIN)
    net.blobs["label"].data[...] = [0, 2]
    assert np.isfinite(float(net.forward()["loss"]))
