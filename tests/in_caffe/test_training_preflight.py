"""The training script's checks before the first iteration: each mistake that Caffe finds
late (at the first test, at a snapshot) or aborts on with a C++ stack dump (a file to resume
from or start from that is missing, of another net or of another kind) is one line and exit
status 2, with nothing written: no snapshot, no curves, no folder."""
import os

import caffe
import pytest

from caffe_losses import train
from training_runs import hdf5_data, scores_and_loss, write_data, write_net, write_solver


def snapshot_of(folder, name, text, solver_type="SGD", snapshot_format="BINARYPROTO"):
    """A snapshot (weights, state) of the net ``text`` after one iteration, in ``folder``."""
    net = write_net(folder, text, name)
    solver = write_solver(folder, net, name="%s_solver" % name, type='"%s"' % solver_type,
                          snapshot_prefix='"%s/%s"' % (folder, name), max_iter=1,
                          snapshot_format=snapshot_format)
    caffe.set_mode_cpu()
    s = caffe.get_solver(solver)
    s.step(1)
    s.snapshot()
    h5 = ".h5" if snapshot_format == "HDF5" else ""
    return ("%s/%s_iter_1.caffemodel%s" % (folder, name, h5),
            "%s/%s_iter_1.solverstate%s" % (folder, name, h5))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Snapshots of the net the tests train (also in HDF5), of a net with another shape, of a
    net with other layer names, and of the same net under Adam; a state whose weights file is
    gone."""
    folder = tmp_path_factory.mktemp("snapshots")
    data = hdf5_data(write_data(folder))
    found = {"data": data, "folder": folder}
    found["same"] = snapshot_of(folder, "same", data + scores_and_loss())
    wide = hdf5_data(write_data(folder, name="wide", features=6))
    found["shape"] = snapshot_of(folder, "shape", wide + scores_and_loss())
    found["names"] = snapshot_of(folder, "names", data + scores_and_loss(score="other"))
    found["adam"] = snapshot_of(folder, "adam", data + scores_and_loss(), solver_type="Adam")
    found["hdf5"] = snapshot_of(folder, "hdf5", data + scores_and_loss(), snapshot_format="HDF5")
    weights, state = snapshot_of(folder, "moved", data + scores_and_loss())
    os.rename(weights, weights + ".away")
    found["moved"] = state
    return found


def run(tmp_path, capfd, args, net_text=None, **solver):
    """The script in this process on a net of ``files`` (or ``net_text``), into tmp_path/out;
    returns (exit status, stderr lines of the script)."""
    net = write_net(tmp_path, net_text)
    settings = dict(test_iter=2, test_interval=10, snapshot=10,
                    snapshot_prefix='"%s/out/run"' % tmp_path)
    settings.update(solver)
    path = write_solver(tmp_path, net, **settings)
    try:
        train.main(["--solver", path, "--quiet"] + [str(a).replace("TMP", str(tmp_path)) for a in args])
        status = 0
    except SystemExit as stop:
        status = stop.code
    err = capfd.readouterr().err
    return status, [line for line in err.splitlines() if line.startswith("caffe_losses.train:")]


def refused(tmp_path, capfd, args, net_text, **solver):
    """The one line the script stops with, having written nothing."""
    before = sorted(os.listdir(str(tmp_path)))
    status, lines = run(tmp_path, capfd, args, net_text, **solver)
    assert status == 2, lines
    assert len(lines) == 1, lines
    assert sorted(os.listdir(str(tmp_path))) == sorted(set(before) | {"net.prototxt", "solver.prototxt"})
    return lines[0][len("caffe_losses.train: "):]


def test_the_test_blobs_must_exist_and_the_error_lists_the_test_nets_blobs(files, tmp_path, capfd):
    net = files["data"] + scores_and_loss(score="logits")
    assert refused(tmp_path, capfd, [], net) == (
        "the test net has no blob 'score' (--score-blob) for the test metrics; its blobs: data, "
        "label, logits, loss")
    assert refused(tmp_path, capfd, ["--score-blob", "logits", "--label-blob", "labels"], net) == (
        "the test net has no blob 'labels' (--label-blob) for the test metrics; its blobs: data, "
        "label, logits, loss")


def test_scores_and_labels_of_different_sizes(files, tmp_path, capfd):
    net = files["data"] + scores_and_loss()
    assert refused(tmp_path, capfd, ["--score-blob", "data"], net) == (
        "the test net's blobs 'data' (--score-blob, 16 x 8) and 'label' (--label-blob, 16 x 3) "
        "differ in size: the test metrics take one 0/1 label per score")


@pytest.mark.parametrize("args,start", [
    (["--out", "TMP/net.prototxt"], "--out TMP/net.prototxt: TMP/net.prototxt is a file; give a "
                                    "folder for curves.png and curves.json"),
    (["--out", "TMP/net.prototxt/curves"], "--out TMP/net.prototxt/curves: TMP/net.prototxt is a file"),
    (["--out", "/proc/curves"], "--out /proc/curves: cannot create a file in /proc ("),
    (["--test-interval", "-1"], "argument --test-interval: must be an integer >= 0, got '-1' (see --help)"),
    (["--resume", "TMP/missing.solverstate"], "--resume TMP/missing.solverstate: no such file"),
    (["--weights", "TMP"], "--weights TMP: is a folder"),
])
def test_options_that_cannot_work(files, tmp_path, capfd, args, start):
    line = refused(tmp_path, capfd, args, files["data"] + scores_and_loss())
    assert line.startswith(start.replace("TMP", str(tmp_path))), line


def test_a_snapshot_folder_that_cannot_be_written(files, tmp_path, capfd):
    line = refused(tmp_path, capfd, [], files["data"] + scores_and_loss(),
                   snapshot_prefix='"/proc/runs/run"')
    assert line.startswith("snapshot_prefix /proc/runs/run: cannot create a file in /proc ("), line
    assert line.endswith("; Caffe could not snapshot there")


def test_resume_and_weights_together(files, tmp_path, capfd):
    weights, state = files["same"]
    assert refused(tmp_path, capfd, ["--resume", state, "--weights", weights],
                   files["data"] + scores_and_loss()) == (
        "give --resume to continue a run or --weights to start from trained weights, not both "
        "(a solver state holds its weights)")


@pytest.mark.parametrize("option,which,message", [
    ("--resume", ("same", 0), "--resume {0} is weights, not a solver state: start from them with "
                              "--weights {0}"),
    ("--resume", ("hdf5", 0), "--resume {0} is weights, not a solver state: start from them with "
                              "--weights {0}"),
    ("--resume", "net", "--resume {0} is not a solver state: it is a text file (a prototxt?), not a "
                        ".solverstate"),
    ("--resume", ("shape", 1), "--resume {0} does not fit the net: its history blob 0 is 3 x 6, "
                               "layer 'score' blob 0 here is 3 x 8"),
    ("--resume", ("adam", 1), "--resume {0} holds 4 history blobs, but this net and solver (SGD, 2 "
                              "learnable blobs) need 2: it was written for another net or solver"),
    ("--resume", "moved", "--resume {0} names its weights {1}, which is not there (relative to "),
    ("--weights", ("same", 1), "--weights {0} is a solver state, not weights: continue its run with "
                               "--resume {0}"),
    ("--weights", ("hdf5", 1), "--weights {0} is a solver state, not weights: continue its run with "
                               "--resume {0}"),
    ("--weights", "net", "--weights {0} holds no weights: it is a text file (a prototxt?), not a "
                         ".caffemodel"),
    ("--weights", ("shape", 0), "--weights {0} does not fit the net: layer 'score' blob 0 is 3 x 6 "
                                "there, 3 x 8 here; rename a layer in the net to train it from "
                                "scratch instead"),
    ("--weights", ("names", 0), "--weights {0} shares no layer name with the net: it holds other; "
                                "the net's layers with weights are score"),
])
def test_files_to_start_from_that_caffe_would_abort_on(files, tmp_path, capfd, option, which, message):
    if which == "net":
        path = str(tmp_path / "net.prototxt")
    elif which == "moved":
        path = files["moved"]
    else:
        path = files[which[0]][which[1]]
    learned = files["moved"].replace(".solverstate", ".caffemodel")
    line = refused(tmp_path, capfd, [option, path], files["data"] + scores_and_loss())
    assert line.startswith(message.format(path, learned)), line


def test_a_solver_caffe_would_abort_on_at_the_first_iteration(files, tmp_path, capfd):
    line = refused(tmp_path, capfd, [], files["data"] + scores_and_loss(), lr_policy=None)
    assert line == ("%s/solver.prototxt: lr_policy '' is not one of Caffe's: fixed, step, exp, inv, "
                    "multistep, poly, sigmoid" % tmp_path)


def test_a_test_net_file_without_test_iter(files, tmp_path, capfd):
    net = files["data"] + scores_and_loss()
    line = refused(tmp_path, capfd, [], net, net=None, train_net='"%s/net.prototxt"' % tmp_path,
                   test_net='"%s/net.prototxt"' % tmp_path, test_iter=None)
    assert line == ("%s/solver.prototxt: a test net needs test_iter, the number of test batches "
                    "(Caffe aborts without it)" % tmp_path)
