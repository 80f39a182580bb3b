"""MultiLabelImageData under several solvers (Caffe's multi-GPU scheme, one process per GPU):
each rank is a process of its own here (``caffe.set_solver_count``/``set_solver_rank``, CPU
mode); a rank's batches are its share of the single process's, image for image and pixel
for pixel, with worker processes and threads alike; TEST is not sharded; a resumed solver
keeps the shares; MultiLabelAccuracy in TRAIN sees its own rank's batch; and the two setup
errors (a shuffle without a seed, a list too short for the ranks)."""
import json
import os
import subprocess
import sys

import caffe
import numpy as np
import pytest

from nets import make_net
from test_image_data_layer import ours, write_images

HERE = os.path.dirname(os.path.abspath(__file__))


def collect(spec):
    """The TRAIN batches of a net, or of a solver restored from a snapshot, and the first
    TEST batch, in this process (the single process) or in a rank's (:func:`ranks`)."""
    found = {}
    if "solver" in spec:
        solver = caffe.get_solver(spec["solver"])
        if spec.get("restore"):
            solver.restore(spec["restore"])
        found["iter"] = [solver.iter]
        for _ in range(spec["batches"]):
            solver.step(1)
            for name in ("label", "score", "map"):
                found.setdefault(name, []).append(solver.net.blobs[name].data.copy())
        if spec.get("snapshot"):
            solver.snapshot()
    else:
        net = make_net(spec["layer"], caffe.TRAIN)
        for _ in range(spec["batches"]):
            out = net.forward()
            found.setdefault("data", []).append(out["data"].copy())
            found.setdefault("label", []).append(out["label"].copy())
        found["test"] = make_net(spec["layer"], caffe.TEST).forward()["label"].copy()
    return {k: np.array(v) for k, v in found.items()}


def rank_main(spec):
    """A rank in a process of its own: ``collect`` under solver_count and solver_rank."""
    caffe.set_mode_cpu()
    caffe.set_solver_count(spec["count"])
    caffe.set_solver_rank(spec["rank"])
    caffe.set_multiprocess(True)  # as Caffe's python/train.py: else Python layers abort in TRAIN
    np.savez(spec["out"], **collect(spec))


def ranks(tmp_path, specs):
    """Run each spec's rank in a process of its own, all at once; their saved arrays."""
    runs = []
    for i, spec in enumerate(specs):
        spec = dict(spec, out=str(tmp_path / ("rank%d.npz" % i)))
        runs.append((spec, subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), json.dumps(spec)], cwd=HERE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
            env=dict(os.environ, GLOG_minloglevel="2"))))
    found = []
    for spec, run in runs:
        output, _ = run.communicate(timeout=180)
        assert run.returncode == 0, output[-3000:]
        found.append(dict(np.load(spec["out"])))
    return found


def shares(single, rank, count):
    """Rank ``rank``'s batches by Caffe's DataLayer rule: the single process's stream
    positions q with q % count == rank (``single``: the single process's batches)."""
    n = single.shape[1]
    stream = single.reshape((-1,) + single.shape[2:])
    return stream[rank::count].reshape((-1, n) + single.shape[2:])


@pytest.mark.parametrize("count,images,shuffle", [(2, 12, True), (3, 10, False)])
def test_the_ranks_read_disjoint_shares_that_together_are_the_single_process_sequence(
        tmp_path, count, images, shuffle):
    write_images(tmp_path, [(20, 24)] * images)
    keys = dict(num_classes=images, batch_size=3, new_height=18, new_width=20, crop_size=14,
                mirror=True, shuffle=shuffle, seed=7)
    steps = 4
    single = collect(dict(batches=steps * count, layer=ours(tmp_path, **keys)))
    # rank 0 on worker processes, the others on threads: both back-ends shard
    per_rank = ranks(tmp_path, [dict(count=count, rank=r, batches=steps,
                                     layer=ours(tmp_path, **dict(keys, **({"threads": 2} if r else {}))))
                                for r in range(count)])
    for r, found in enumerate(per_rank):
        np.testing.assert_array_equal(found["label"], shares(single["label"], r, count))
        assert found["data"].tobytes() == shares(single["data"], r, count).tobytes()  # crops, flips
        np.testing.assert_array_equal(found["test"], single["test"])  # TEST: every rank reads all
    seen = [f["label"].argmax(axis=2) for f in per_rank]
    if not shuffle:  # Caffe's Skip(): rank r keeps the positions q = (b N + t) n + r of the list
        for r in range(count):
            q = (np.arange(steps)[:, None] * 3 + np.arange(3)) * count + r
            np.testing.assert_array_equal(seen[r], q % images)
    else:  # one pass over the list is two steps of the two ranks: disjoint halves of it
        for step in range(0, steps, 2):
            halves = [set(s[step:step + 2].ravel()) for s in seen]
            assert not halves[0] & halves[1] and halves[0] | halves[1] == set(range(images))


def solver_files(tmp_path, folder, batch_size):
    net = tmp_path / "net.prototxt"
    net.write_text(ours(folder, "TRAIN", num_classes=16, batch_size=batch_size, shuffle=True, seed=3,
                        threads=1) + """
layer { name: "score" type: "InnerProduct" bottom: "data" top: "score"
  inner_product_param { num_output: 16 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "score" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Python" bottom: "score" bottom: "label" top: "map"
  include { phase: TRAIN }
  python_param { module: "caffe_losses" layer: "MultiLabelAccuracy"
                 param_str: "{'metrics': ['map']}" } }
""")
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 100\nrandom_seed: 5\n'
                      'snapshot_prefix: "%s"\nsolver_mode: CPU\n' % (net, tmp_path / "snap"))
    return str(solver)


def test_a_resumed_solver_keeps_the_shares_and_multilabel_accuracy_sees_its_own_rank(tmp_path):
    folder = tmp_path / "images"
    write_images(folder, [(8, 8)] * 16)
    solver = solver_files(tmp_path, folder, batch_size=2)
    collect(dict(batches=3, solver=solver, snapshot=True))
    state = str(tmp_path / "snap_iter_3.solverstate")
    single = collect(dict(batches=6, solver=solver, restore=state))
    per_rank = ranks(tmp_path, [dict(count=2, rank=r, batches=3, solver=solver, restore=state)
                                for r in range(2)])
    assert [f["iter"][0] for f in (single, *per_rank)] == [3, 3, 3]
    for r, found in enumerate(per_rank):  # the layer starts again at batch 0, as ImageData
        np.testing.assert_array_equal(found["label"], shares(single["label"], r, 2))
    # MultiLabelAccuracy in TRAIN: the mAP of its own rank's batch
    differs = 0
    for step in range(3):
        both = mean_ap(np.concatenate([f["score"][step] for f in per_rank]),
                       np.concatenate([f["label"][step] for f in per_rank]))
        for found in per_rank:
            own = mean_ap(found["score"][step], found["label"][step])
            assert found["map"][step] == pytest.approx(own)
            differs += own != pytest.approx(both)
    assert differs  # so the test can tell: the two ranks' batches together score otherwise


def mean_ap(scores, labels):
    """mAP over the classes with a positive, each image with one positive label: the AP of
    a class is 1 / the rank of its positive image among the batch's scores for the class."""
    aps = []
    for c in np.flatnonzero(labels.any(axis=0)):
        for i in np.flatnonzero(labels[:, c]):
            aps.append(1.0 / (1 + np.sum(scores[:, c] > scores[i, c])))
    return np.mean(aps)


@pytest.fixture
def two_solvers():
    caffe.set_solver_count(2)
    caffe.set_solver_rank(1)
    caffe.set_multiprocess(True)
    yield
    caffe.set_solver_count(1)
    caffe.set_solver_rank(0)
    caffe.set_multiprocess(False)


@pytest.mark.parametrize("keys,message", [
    (dict(batch_size=2, shuffle=True),
     r"shuffle under solver_count 2 \(one process per GPU\) needs a 'seed', the same in every rank, "
     r"so that the ranks share one order and read disjoint images; set 'seed' in param_str"),
    (dict(batch_size=3, seed=1),
     r"the list file '.*list.txt' \(source\) has 5 images, fewer than solver_count 2 x batch_size 3 "
     r"= 6: the ranks would read the same images in one step; give a longer list or a smaller "
     r"batch_size"),
])
def test_under_several_solvers_a_bad_train_layer_fails_at_setup(tmp_path, two_solvers, keys, message):
    write_images(tmp_path, [(8, 8)] * 5)
    with pytest.raises(ValueError, match="^MultiLabelImageData: " + message + "$"):
        make_net(ours(tmp_path, **keys), caffe.TRAIN)
    make_net(ours(tmp_path, **keys), caffe.TEST).forward()  # TEST is not sharded: no error


def test_in_one_process_a_list_shorter_than_a_batch_wraps_as_in_imagedata(tmp_path):
    write_images(tmp_path, [(8, 8)] * 5)
    net = make_net(ours(tmp_path, batch_size=7, shuffle=True), caffe.TRAIN)
    labels = net.forward()["label"].argmax(axis=1)
    assert sorted(labels[:5]) == [0, 1, 2, 3, 4] and len(set(labels[5:]) - set(range(5))) == 0


if __name__ == "__main__":
    rank_main(json.loads(sys.argv[1]))
