"""What the training script reports and where it writes: each test once per interval, the
loss of the net's loss outputs whatever their names, the snapshot files Caffe wrote with the
curves beside them, warnings for a used folder, a missing test_iter and a test that does not
read its list once; and the module docstring's examples, run as written."""
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from caffe_losses import preflight, train
from training_runs import (CLASSES, REPO, environment, hdf5_data, image_data, pace,
                           scores_and_loss, write_data, write_images, write_net, write_solver)


def run(tmp_path, capfd, net_text, args=(), **solver):
    """The script in this process; returns (stdout, the script's stderr lines)."""
    net = write_net(tmp_path, net_text)
    settings = dict(test_iter=4, test_interval=10, max_iter=20,  # 4 x 16 = the 64 rows
                    snapshot_prefix='"%s/out/run"' % tmp_path)
    settings.update(solver)
    path = write_solver(tmp_path, net, **settings)
    train.main(["--solver", path] + [str(a) for a in args])
    out, err = capfd.readouterr()
    return out, [line for line in err.splitlines() if line.startswith("caffe_losses.train:")]


@pytest.fixture
def data(tmp_path):
    return hdf5_data(write_data(tmp_path))


def test_each_test_runs_once_per_interval(tmp_path, capfd, data):
    log = str(tmp_path / "test_forwards")
    out, _ = run(tmp_path, capfd, data + scores_and_loss() + pace(log=log, phase="TEST"))
    assert re.findall(r"iteration (\d+): test mAP", out) == ["10", "20"]
    with open(log) as f:
        assert len(f.readlines()) == 2 * 4  # two tests of test_iter 4 batches, nothing else


def test_the_loss_shown_is_the_weighted_sum_of_the_loss_outputs_whatever_their_names(tmp_path, capfd):
    # scores stay 0 (zero weights, no learning) against labels 1: the sigmoid loss is 3 log 2 per
    # sample; the Euclidean one 1/(2N) sum (0 - 1)^2 = 3/2, counted at its loss weight 0.5
    net = ('layer { name: "data" type: "DummyData" top: "data" top: "label"\n'
           '  dummy_data_param { shape { dim: 4 dim: 2 } shape { dim: 4 dim: %d }\n'
           '    data_filler { type: "constant" value: 1 } } }\n'
           'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "logits"\n'
           '  inner_product_param { num_output: %d weight_filler { type: "constant" value: 0 } } }\n'
           'layer { name: "bce" type: "Python" bottom: "logits" bottom: "label" top: "bce" loss_weight: 1\n'
           '  python_param { module: "caffe_losses" layer: "SigmoidCrossEntropyLoss" } }\n'
           'layer { name: "l2" type: "EuclideanLoss" bottom: "logits" bottom: "label" top: "l2"\n'
           '  loss_weight: 0.5 }\n' % (CLASSES, CLASSES))
    out, _ = run(tmp_path, capfd, net, ["--test-interval", "0"], base_lr=0, test_iter=None,
                 test_interval=None)
    expected = CLASSES * np.log(2) + 0.5 * CLASSES / 2
    assert "iteration 20/20: loss %.4f" % expected in out
    curves = json.load(open(str(tmp_path / "out" / "curves.json")))
    assert [it for it, _ in curves["train"]] == [10, 20]
    assert np.allclose([loss for _, loss in curves["train"]], expected, rtol=1e-6)


@pytest.mark.parametrize("prefix,files,folder", [
    (None, ["solver_iter_20.caffemodel", "solver_iter_20.solverstate"], ""),
    ("snaps", ["snaps/solver_iter_20.caffemodel", "snaps/solver_iter_20.solverstate"], "snaps"),
    ("out/run", ["out/run_iter_20.caffemodel.h5", "out/run_iter_20.solverstate.h5"], "out"),
])
def test_the_final_line_names_the_files_caffe_wrote_and_the_curves_go_beside_them(
        tmp_path, capfd, monkeypatch, data, prefix, files, folder):
    (tmp_path / "snaps").mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(str(tmp_path / "work"))
    settings = dict(snapshot_format="HDF5") if prefix == "out/run" else {}
    out, _ = run(tmp_path, capfd, data + scores_and_loss(), **settings,
                 snapshot_prefix='"%s/%s"' % (tmp_path, prefix) if prefix else None)
    files = [str(tmp_path / f) for f in files]
    curves = str(tmp_path / folder / "curves.png")
    line = re.search(r"^trained 20 iterations in [\d.]+ s; (.*)$", out, re.M).group(1)
    assert line == "curves: %s; snapshots: %s" % (curves, ", ".join(files))
    assert all(os.path.exists(f) for f in files + [curves])
    assert os.listdir(str(tmp_path / "work")) == []  # never the working directory


def test_a_second_run_into_a_used_folder_warns_before_it_overwrites(tmp_path, capfd, data):
    _, first = run(tmp_path, capfd, data + scores_and_loss(), snapshot=10)
    assert first == []
    _, second = run(tmp_path, capfd, data + scores_and_loss(), snapshot=10)
    assert second == ["caffe_losses.train: warning: an earlier run left {0}/out/curves.json and "
                      "{0}/out/curves.png and 4 snapshot files {0}/out/run_iter_*: this run writes "
                      "over them (another --out or snapshot_prefix keeps them)".format(tmp_path)]
    _, resumed = run(tmp_path, capfd, data + scores_and_loss(), ["--resume", tmp_path / "out" /
                                                                 "run_iter_10.solverstate"])
    assert resumed == []  # continuing that run


def test_test_interval_0_turns_the_solvers_tests_off(tmp_path, capfd, data):
    log = str(tmp_path / "test_forwards")
    out, _ = run(tmp_path, capfd, data + scores_and_loss() + pace(log=log, phase="TEST"),
                 ["--test-interval", "0"])
    assert "test mAP" not in out and "final test" not in out
    assert not os.path.exists(log)  # no test net was even built
    assert json.load(open(str(tmp_path / "out" / "curves.json")))["test"] == []


def test_a_solver_without_test_iter_warns_that_nothing_is_tested(tmp_path, capfd, data):
    net = data + scores_and_loss() + pace(phase="TEST")
    out, warnings = run(tmp_path, capfd, net, test_iter=None)
    assert warnings == ["caffe_losses.train: warning: %s/solver.prototxt has no test_iter, so Caffe "
                        "makes no test net and nothing is tested; add test_iter: N (N x the test "
                        "batch size = the test set)" % tmp_path]
    assert "trained 20 iterations" in out and "test mAP" not in out


def test_a_test_that_does_not_read_its_list_once_warns_with_both_numbers(tmp_path, capfd):
    # HDF5Data (64 rows) in both nets, and two test-only layers: ImageData (10 images) and a
    # Python data layer that tells its length as MultiLabelImageData does (100 images)
    net = (hdf5_data(write_data(tmp_path), batch_size=16)
           + 'layer { name: "files" type: "ImageData" top: "pixels" top: "index" include { phase: TEST }\n'
             '  image_data_param { source: "%s" batch_size: 4 } }\n' % write_images(tmp_path, 10)
           + 'layer { name: "listed" type: "Python" top: "x" top: "y" include { phase: TEST }\n'
             '  python_param { module: "training_runs" layer: "ListData"\n'
             '    param_str: "{\\"images\\": 100, \\"batch_size\\": 16}" } }\n'
           + scores_and_loss())
    _, warnings = run(tmp_path, capfd, net, test_iter=5)
    assert warnings == ["caffe_losses.train: warning: each test reads test_iter 5 x batch_size %s" % w
                        for w in [
        "16 = 80 images from layer 'data', whose list has 64: 16 of them more than once; test_iter: 4 "
        "reads each once",
        "4 = 20 images from layer 'files', whose list has 10: 10 of them more than once; no test_iter "
        "reads each once with batch_size 4: a batch size that divides 10 does",
        "16 = 80 images from layer 'listed', whose list has 100: 20 left out of each test; no "
        "test_iter reads each once with batch_size 16: a batch size that divides 100 does"]]


def test_multilabel_image_data_tells_the_length_of_its_list(tmp_path, capfd, data):
    # needs MultiLabelImageData's `images` and `batch_size` attributes (the data layer's side)
    images = image_data(write_images(tmp_path, 10), phase="TEST", tops=("pixels", "tags"), threads=1)
    _, warnings = run(tmp_path, capfd, data + images + scores_and_loss())
    assert warnings == ["caffe_losses.train: warning: each test reads test_iter 4 x batch_size 4 = 16 "
                        "images from layer 'images', whose list has 10: 6 of them more than once; no "
                        "test_iter reads each once with batch_size 4: a batch size that divides 10 does"]


def test_the_test_blobs_default_to_the_bottoms_of_the_multilabel_accuracy_layer(tmp_path, capfd, data):
    net = data + scores_and_loss(score="logits") + (
        'layer { name: "acc" type: "Python" bottom: "logits" bottom: "label" top: "map"\n'
        '  include { phase: TEST }\n'
        '  python_param { module: "caffe_losses" layer: "MultiLabelAccuracy" param_str: "{\'metrics\': '
        '[\'map\', \'cf1\']}" } }\n')
    out, _ = run(tmp_path, capfd, net)
    assert re.search(r"^iteration 20: test mAP \d\.\d{4}, CF1 \d\.\d{4}$", out, re.M), out


def test_the_test_net_tests_the_weights_being_trained(tmp_path, data):
    net = write_net(tmp_path, data + scores_and_loss())
    solver_path = write_solver(tmp_path, net, test_iter=4, test_interval=10)
    args = train.parse_args(["--solver", solver_path])
    solver = train.make_solver(preflight.Plan(args, train.read_solver(solver_path)))
    solver.step(5)  # Caffe itself does not test here, so it never shared them
    for trained, tested in zip(solver.net.params["score"], solver.test_nets[0].params["score"]):
        assert np.array_equal(trained.data, tested.data)


def docstring_commands():
    """The commands in caffe_losses.train's docstring: its indented lines from ``python3`` on,
    joined where a line ends with a backslash."""
    commands, going_on = [], False
    for line in train.__doc__.splitlines():
        if going_on:
            commands[-1] += " " + line.strip()
        elif line.startswith("    python3 "):
            commands.append(line.strip())
        going_on = bool(commands) and commands[-1].endswith("\\")
        if going_on:
            commands[-1] = commands[-1][:-1].rstrip()
    return commands


def test_the_docstring_examples_run_as_written():
    commands = docstring_commands()
    assert len(commands) == 3
    for command in commands:
        words = shlex.split(command)
        done = subprocess.run([sys.executable] + words[1:], cwd=REPO, env=environment(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=300)
        assert done.returncode == 0, (command, done.stdout[-3000:])
        assert "Traceback" not in done.stdout
