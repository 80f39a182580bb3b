"""train.py --gpus 0,1, Caffe's python/train.py scheme (one process per GPU, NCCL), on two
fake GPUs (fake_gpus.py: the ranks in CPU mode, and a fake NCCL that averages their gradients
through shared memory; everything else is the code that runs on GPUs). Two ranks with half
batches of sharded data train as one process with the whole batch, under the solver's own
type; rank 0 alone tests and snapshots; a signal to the parent or to the group stops every
rank after the same iteration, with a resume command that repeats --gpus; a rank that dies
ends the others with one line; a list too short for one step of the ranks is refused before
any process starts. Not run here: CUDA (cudaSetDevice, GPU mode) and NCCL's own transport."""
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fake_gpus
from caffe_losses import gpus, preflight, ranks, snapshots, train
from caffe_losses.prototxt import caffe_proto
from training_runs import (environment, hdf5_data, image_data, pace, read_until, scores_and_loss,
                           start, wait_for_empty_group, wait_for_forwards, write_data,
                           write_images, write_net, write_solver)

GPUS = ("--gpus", "0,1")


def run_on_two_gpus(*args, timeout=120):
    result = subprocess.run([sys.executable, "-m", "fake_gpus"] + [str(a) for a in args + GPUS],
                            env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=timeout)
    return result.returncode, result.stdout


def forwards_by_rank(log):
    """``{solver rank: forwards}`` of a Pace layer's log."""
    counts = {}
    with open(log) as f:
        for line in f:
            rank = int(line.split()[1])
            counts[rank] = counts.get(rank, 0) + 1
    return counts


def weights(path):
    net = caffe_proto()[0].NetParameter()
    with open(path, "rb") as f:
        net.ParseFromString(f.read())
    return {layer.name: [np.array(blob.data) for blob in layer.blobs] for layer in net.layer
            if len(layer.blobs)}


SOLVERS = {  # Adam reducing layer by layer (Caffe's default), on HDF5Data (Caffe shards it);
    # Nesterov reducing once per iteration, on MultiLabelImageData
    "Adam": dict(type='"Adam"', base_lr=0.01, momentum=0.9, momentum2=0.999, weight_decay=0.001),
    "Nesterov": dict(type='"Nesterov"', base_lr=0.05, momentum=0.9, weight_decay=0.001,
                     layer_wise_reduce="false"),
}


@pytest.mark.parametrize("kind", sorted(SOLVERS))
def test_two_ranks_with_half_batches_train_as_one_process_with_the_whole_batch(tmp_path, capfd, kind):
    if kind == "Adam":
        listing = write_data(tmp_path)
        data = lambda batch: hdf5_data(listing, batch)  # noqa: E731
    else:
        listing = write_images(tmp_path, 32)
        data = lambda batch: image_data(listing, batch, threads=1, scale=1 / 255.0)  # noqa: E731
    outputs = {}
    for name, batch in (("one", 16), ("two", 8)):
        folder = tmp_path / name
        folder.mkdir()
        log = str(folder / "forwards")
        net = write_net(folder, data(batch) + scores_and_loss() + pace(log=log, phase="TRAIN")
                        + pace(log=log + "_test", phase="TEST"))
        solver = write_solver(folder, net, max_iter=12, test_iter=2, test_interval=6, snapshot=6,
                              snapshot_prefix='"%s/run"' % folder, **SOLVERS[kind])
        if name == "one":
            train.main(["--solver", solver, "--quiet"])
            outputs[name] = capfd.readouterr()
        else:
            status, outputs[name] = run_on_two_gpus("--solver", solver, "--quiet")
            assert status == 0, outputs[name][-3000:]
    one, two = tmp_path / "one", tmp_path / "two"
    assert "training iterations 1 to 12 on GPUs 0,1" in outputs["two"]
    assert outputs["two"].count("warning: each test reads test_iter 2 x batch_size 8") == 1  # checked once
    assert forwards_by_rank(str(one / "forwards")) == {0: 12}
    assert forwards_by_rank(str(two / "forwards")) == {0: 12, 1: 12}  # both ranks trained
    assert forwards_by_rank(str(two / "forwards_test")) == {0: 2 * 2}  # rank 0 tested, twice
    # rank 0 snapshotted (a snapshot in rank 1 aborts it: Caffe's CHECK(root_solver()))
    assert all(os.path.exists(str(two / ("run_iter_%d.%s" % (i, ext))))
               for i in (6, 12) for ext in ("caffemodel", "solverstate"))
    alone, shared = weights(str(one / "run_iter_12.caffemodel")), weights(str(two / "run_iter_12.caffemodel"))
    assert list(alone) == list(shared) == ["score"]
    for a, b in zip(alone["score"], shared["score"]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    if kind == "Adam":  # Adam's state: two history blobs per learnable blob (SGD's: one)
        assert len(snapshots.read_state(str(two / "run_iter_12.solverstate"))[0]) == 4


def endless_run(tmp_path, seconds=0.005, fail=None):
    """A solver of 100,000 iterations of a small net, each at least ``seconds`` long, whose
    forwards are logged in ``tmp_path/forwards`` with the rank that made them."""
    data = hdf5_data(write_data(tmp_path), batch_size=8)
    net = write_net(tmp_path, data + scores_and_loss() + pace(seconds, str(tmp_path / "forwards"),
                                                              phase="TRAIN", fail=fail))
    return write_solver(tmp_path, net, max_iter=100000, snapshot_prefix='"%s/out/run"' % tmp_path)


def started(process, tmp_path, iterations=10):
    """Until both ranks have trained about ``iterations``; the lines printed so far."""
    seen = []
    read_until(process, "training iterations 1 to 100000 on GPUs 0,1", seen)
    wait_for_forwards(str(tmp_path / "forwards"), 2 * iterations)
    return seen


def stopped(process, seen, name, status):
    """The iteration both ranks stopped after, checked: the exit status, the snapshot, the
    resume command."""
    output = "".join(seen) + process.communicate(timeout=60)[0]
    assert process.returncode == status, output[-3000:]
    found = re.search(r"stopped by %s after iteration (\d+) of 100000 \(" % name, output)
    assert found, output[-3000:]
    return int(found.group(1)), output


def test_sigint_to_the_parent_stops_both_ranks_after_one_iteration_and_the_resume_command_continues(tmp_path):
    solver = endless_run(tmp_path)
    process = start("--solver", solver, "--test-interval", "0", *GPUS, module="fake_gpus")
    seen = started(process, tmp_path)
    process.send_signal(signal.SIGINT)  # the parent only: it tells the ranks
    n, output = stopped(process, seen, "SIGINT", 0)
    assert forwards_by_rank(str(tmp_path / "forwards")) == {0: n, 1: n}
    assert wait_for_empty_group(process.pid) == []
    state = "%s/out/run_iter_%d.solverstate" % (tmp_path, n)
    assert os.path.exists(state) and os.path.exists(state.replace(".solverstate", ".caffemodel"))
    assert "Traceback" not in output
    command = re.search(r"^to resume: (.*)$", output, re.M).group(1)
    assert command == ("python3 -m caffe_losses.train --solver %s --test-interval 0 --gpus 0,1 "
                       "--resume %s" % (solver, state))
    with open(solver) as f:
        text = f.read()
    with open(solver, "w") as f:
        f.write(text.replace("max_iter: 100000", "max_iter: %d" % (n + 3)))
    words = shlex.split(command)
    status, resumed = run_on_two_gpus(*words[3:words.index("--gpus")] + words[words.index("--gpus") + 2:])
    assert status == 0, resumed[-3000:]
    assert "training iterations %d to %d on GPUs 0,1" % (n + 1, n + 3) in resumed
    assert forwards_by_rank(str(tmp_path / "forwards")) == {0: n + 3, 1: n + 3}


def test_sighup_snapshots_and_sigterm_to_the_group_stops_both_ranks_with_143(tmp_path):
    process = start("--solver", endless_run(tmp_path), "--test-interval", "0", *GPUS, module="fake_gpus")
    seen = started(process, tmp_path)
    process.send_signal(signal.SIGHUP)
    line = read_until(process, "snapshot (SIGHUP)", seen)
    k = int(re.search(r"iteration (\d+): snapshot \(SIGHUP\): ", line).group(1))
    assert os.path.exists(str(tmp_path / "out" / ("run_iter_%d.solverstate" % k)))
    os.killpg(process.pid, signal.SIGTERM)  # every process of the run gets it
    n, output = stopped(process, seen, "SIGTERM", 128 + signal.SIGTERM)
    assert n > k and forwards_by_rank(str(tmp_path / "forwards")) == {0: n, 1: n}
    assert os.path.exists(str(tmp_path / "out" / ("run_iter_%d.solverstate" % n)))
    assert wait_for_empty_group(process.pid) == []


def test_a_second_sigint_to_the_parent_ends_it_and_the_ranks_at_once(tmp_path):
    # each iteration sleeps 20 s: the run can only end quickly if the second signal ends it,
    # and the ranks, which never see it, end with their parent
    process = start("--solver", endless_run(tmp_path, seconds=20), "--test-interval", "0", *GPUS,
                    module="fake_gpus")
    read_until(process, "training iterations", [])
    wait_for_forwards(str(tmp_path / "forwards"), 2)
    began = time.time()
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGINT
    assert wait_for_empty_group(process.pid) == []
    assert time.time() - began < 10
    assert not os.path.exists(str(tmp_path / "out"))


@pytest.mark.parametrize("death", ["exception", "SIGKILL"])
def test_a_rank_that_dies_ends_the_others_with_one_line_naming_it_and_its_gpu(tmp_path, death):
    solver = endless_run(tmp_path, fail=[1, 5] if death == "exception" else None)
    process = start("--solver", solver, "--test-interval", "0", *GPUS, module="fake_gpus")
    seen = started(process, tmp_path, iterations=2)
    if death == "SIGKILL":
        with open(str(tmp_path / "forwards")) as f:
            os.kill(next(int(line.split()[2]) for line in f if line.split()[1] == "1"), signal.SIGKILL)
    output = "".join(seen) + process.communicate(timeout=60)[0]
    assert process.returncode == 1, output[-3000:]
    last = output.rstrip().splitlines()[-1]
    assert last == "caffe_losses.train: rank 1 (GPU 1) %s; the other ranks were stopped" % (
        "failed: ValueError: Pace: failing on purpose at forward 5 of rank 1" if death == "exception"
        else "was killed by SIGKILL (signal 9), which the kernel's out-of-memory killer sends "
             "(dmesg tells whether it did)")
    assert wait_for_empty_group(process.pid) == []


def bom_list_with_comments(tmp_path, images):
    """``images`` images listed with a byte-order mark, comments, blank lines and a path with
    a space: more lines than images."""
    listing = write_images(tmp_path, images)
    with open(listing) as f:
        lines = f.read().splitlines()
    os.rename(lines[0].split()[0], lines[0].split()[0].replace("0.png", "image 0.png"))
    lines[0] = lines[0].replace("0.png", "image 0.png")
    text = "\ufeff# the training images\n\n" + "\n".join(lines[:3]) + "\n  # more\n" + "\n".join(lines[3:])
    with open(listing, "w", encoding="utf-8") as f:
        f.write(text + "\n\n")
    return listing


def image_data_v1(tmp_path):
    listing = str(tmp_path / "list.txt")
    with open(listing, "w") as f:
        f.write("".join("%s/i%d.png %d\n" % (tmp_path, i, i % 2) for i in range(5)))
    return ('layers { name: "images" type: IMAGE_DATA top: "data" top: "label"\n'
            '  image_data_param { source: "%s" batch_size: 3 } include { phase: TRAIN } }\n' % listing)


def hdf5_by_stage(tmp_path):
    """Two TRAIN data layers, chosen by the stage "big" that the solver's train_state sets."""
    listing = write_data(tmp_path)
    return ('layer { name: "small" type: "HDF5Data" top: "data" top: "label"\n'
            '  hdf5_data_param { source: "%s" batch_size: 4 } include { phase: TRAIN not_stage: "big" } }\n'
            'layer { name: "big" type: "HDF5Data" top: "data" top: "label"\n'
            '  hdf5_data_param { source: "%s" batch_size: 40 } include { phase: TRAIN stage: "big" } }\n'
            % (listing, listing))


@pytest.mark.parametrize("case,message", [
    ("MultiLabelImageData", "layer 'images' (MultiLabelImageData) of the TRAIN net has 7 images in "
                            "its list, fewer than one step of the 2 ranks reads (2 x batch_size 4 = 8)"),
    ("ImageData V1", "layer 'images' (ImageData) of the TRAIN net has 5 images in its list, fewer "
                     "than one step of the 2 ranks reads (2 x batch_size 3 = 6)"),
    ("HDF5Data by stage", "layer 'big' (HDF5Data) of the TRAIN net has 64 rows in its list, fewer "
                          "than one step of the 2 ranks reads (2 x batch_size 40 = 80)"),
])
def test_a_train_list_shorter_than_one_step_of_the_ranks_is_refused_before_any_process(
        tmp_path, capfd, monkeypatch, case, message):
    fake_gpus.install(setattr=monkeypatch.setattr)
    monkeypatch.setattr(gpus, "count_gpus", lambda runtime: pytest.fail("GPUs probed in a process"))
    monkeypatch.setattr(ranks, "start", lambda *a, **k: pytest.fail("a process started"))
    settings = {}
    if case == "MultiLabelImageData":
        net = image_data(bom_list_with_comments(tmp_path, 7), 4) + scores_and_loss()
    elif case == "ImageData V1":
        net = image_data_v1(tmp_path)
    else:
        net = hdf5_by_stage(tmp_path) + scores_and_loss()
        settings["train_state"] = '{ stage: "big" }'
    solver = write_solver(tmp_path, write_net(tmp_path, net), snapshot_prefix='"%s/out/run"' % tmp_path,
                          **settings)
    before = sorted(os.listdir(str(tmp_path)))
    with pytest.raises(SystemExit) as stop:
        train.main(["--solver", solver] + list(GPUS))
    assert stop.value.code == 2
    assert capfd.readouterr().err.splitlines() == [
        "caffe_losses.train: --gpus 0,1: %s: they would read the same ones in one step; give a "
        "longer list, a smaller batch_size or fewer GPUs" % message]
    assert sorted(os.listdir(str(tmp_path))) == before


def test_image_data_in_order_on_several_gpus_is_a_warning(tmp_path):
    net = image_data_v1(tmp_path).replace("batch_size: 3", "batch_size: 2")
    solver = write_solver(tmp_path, write_net(tmp_path, net))
    plan = preflight.Plan(train.parse_args(["--solver", solver] + list(GPUS)), train.read_solver(solver))
    assert plan.warnings == [
        "--gpus 0,1: layer 'images' (ImageData) of the TRAIN net reads its list in order in every "
        "rank, so each rank trains on the same batches (Caffe's ImageData does not shard); set "
        "shuffle: true (each rank shuffles with its own seed), or use MultiLabelImageData, which "
        "shards"]


@pytest.mark.parametrize("problem", ["score blob", "layer error"])
def test_the_nets_are_checked_once_before_the_ranks_start(tmp_path, problem):
    listing = write_images(tmp_path, 16)
    args = ["--score-blob", "logits"] if problem == "score blob" else []
    extra = dict(shuffle=True) if problem == "layer error" else {}
    net = write_net(tmp_path, image_data(listing, 4, threads=1, **extra) + scores_and_loss())
    solver = write_solver(tmp_path, net, test_iter=1, test_interval=10, snapshot_prefix='"%s/out/run"' % tmp_path)
    status, output = run_on_two_gpus("--solver", solver, *args)
    lines = [line for line in output.splitlines() if line.startswith("caffe_losses.train:")]
    if problem == "score blob":
        assert status == 2, output
        assert lines == ["caffe_losses.train: the test net has no blob 'logits' (--score-blob) for the "
                         "test metrics; its blobs: data, label, score, loss"]
    else:  # the layer's own error at setup, as rank 0 would meet it
        assert status == 1, output
        assert lines == ["caffe_losses.train: building the nets to check them failed: ValueError: "
                         "MultiLabelImageData: shuffle under solver_count 2 (one process per GPU) needs "
                         "a 'seed', the same in every rank, so that the ranks share one order and read "
                         "disjoint images; set 'seed' in param_str"]
    assert not os.path.exists(str(tmp_path / "out"))
