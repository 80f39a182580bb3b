"""V1 nets (`layers { type: SOFTMAX_LOSS ... }`, blobs_lr, the data layers' old transformation
fields) and the other old forms that Caffe upgrades when it loads a net (input fields,
BatchNorm with three param entries): the tool upgrades them as Caffe's own
upgrade_net_proto_text does, says so in one line, and writes the current format."""
import subprocess

import caffe
import h5py
import numpy as np
import pytest

from caffe_losses import cli, prototxt
from caffe_losses.prototxt import PrototxtError
from nets import make_net
from test_prototxt_tool import assert_same_as_cpp, layer_list, load_deploy, parse, python_losses

# Three heads on one trunk, V1 style: a classifier (SOFTMAX_LOSS), tags (SIGMOID_CROSS_ENTROPY_LOSS,
# weight 0.5) sharing the classifier's weights, a EUCLIDEAN_LOSS kept for display; HDF5 data in
# TRAIN, an LMDB with the old transformation fields in TEST.
V1_NET = """name: "V1Heads"
layers { name: "data" type: HDF5_DATA top: "data" top: "label" top: "tags"
  hdf5_data_param { source: "%(source)s" batch_size: 4 } include { phase: TRAIN } }
layers { name: "data" type: DATA top: "data" top: "label" top: "tags"
  data_param { source: "val_lmdb" backend: LMDB batch_size: 2 scale: 0.00390625 crop_size: 8
    mirror: false mean_file: "mean.binaryproto" } include { phase: TEST } }
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" blobs_lr: 1 blobs_lr: 2
  weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.2 }
    bias_filler { type: "constant" value: 0.1 } } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "fc_cls" type: INNER_PRODUCT bottom: "pool1" top: "fc_cls" param: "shared_w" param: "cls_b"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layers { name: "loss_cls" type: SOFTMAX_LOSS bottom: "fc_cls" bottom: "label" top: "loss_cls" }
layers { name: "fc_tags" type: INNER_PRODUCT bottom: "pool1" top: "fc_tags" param: "shared_w" param: "tags_b"
  blob_share_mode: STRICT blobs_lr: 1 blobs_lr: 2
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layers { name: "loss_tags" type: SIGMOID_CROSS_ENTROPY_LOSS bottom: "fc_tags" bottom: "tags" top: "loss_tags"
  loss_weight: 0.5 }
layers { name: "tags_prob" type: SIGMOID bottom: "fc_tags" top: "tags_prob" }
layers { name: "loss_l2" type: EUCLIDEAN_LOSS bottom: "tags_prob" bottom: "tags" top: "loss_l2" loss_weight: 0 }
layers { name: "accuracy" type: ACCURACY bottom: "fc_cls" bottom: "label" top: "accuracy" include { phase: TEST } }
"""
# a deploy net of the current format but for its input fields and an old BatchNorm
OLD_FIELDS = """name: "OldFields"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 6 input_dim: 6
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 1 } }
layer { name: "prob" type: "Softmax" bottom: "conv" top: "prob" }
"""


@pytest.fixture(scope="module")
def v1_path(tmp_path_factory):
    """The V1 net and the HDF5 file its data layer reads."""
    folder = tmp_path_factory.mktemp("v1")
    rng = np.random.default_rng(0)
    with h5py.File(str(folder / "train.h5"), "w") as f:
        f["data"] = rng.normal(size=(8, 3, 8, 8)).astype(np.float32)
        f["label"] = rng.integers(0, 5, size=8).astype(np.float32)
        f["tags"] = (rng.random((8, 5)) < 0.4).astype(np.float32)
    (folder / "train.txt").write_text("%s\n" % (folder / "train.h5"))
    path = folder / "v1.prototxt"
    path.write_text(V1_NET % dict(source=folder / "train.txt"))
    return path


@pytest.mark.parametrize("which", ["v1", "old_fields"])
def test_upgrade_is_what_upgrade_net_proto_text_writes(which, v1_path, tmp_path):
    path = v1_path if which == "v1" else tmp_path / "old.prototxt"
    if which == "old_fields":
        path.write_text(OLD_FIELDS)
    subprocess.run(["upgrade_net_proto_text", str(path), str(tmp_path / "caffe.prototxt")], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    theirs = parse((tmp_path / "caffe.prototxt").read_text())
    notes = []
    ours = prototxt.read_net(str(path), notes)
    assert ours == theirs
    assert len(ours.layer) == (12 if which == "v1" else 4) and not ours.layers and not ours.input
    expected = (["a V1 net (layers { type: HDF5_DATA ... }): upgraded to the current format as Caffe "
                 "does when it loads it (upgrade_net_proto_text)"] if which == "v1" else
                ["the net's input fields (data) became an Input layer named 'input', as Caffe upgrades them",
                 "BatchNorm layers with three param { } entries: their lr_mult and decay_mult set to 0, as Caffe does"])
    assert notes == ["%s: %s" % (path, note) for note in expected]


def test_upgraded_net_gives_the_outputs_of_the_v1_file_in_caffe(v1_path, tmp_path):
    upgraded = tmp_path / "upgraded.prototxt"
    upgraded.write_text(prototxt.net_text(prototxt.read_net(str(v1_path))))
    assert "layers {" not in upgraded.read_text()
    caffe.set_random_seed(5)
    v1 = caffe.Net(str(v1_path), caffe.TRAIN)
    caffe.set_random_seed(5)
    ours = caffe.Net(str(upgraded), caffe.TRAIN)
    assert list(ours.params) == list(v1.params) == ["conv1", "fc_cls", "fc_tags"]
    assert ours.params["fc_tags"][0].data is not None
    for net in (v1, ours):
        net.forward()
        net.backward()
    for name, blob in v1.blobs.items():
        np.testing.assert_array_equal(ours.blobs[name].data, blob.data, err_msg=name)
    for name, blobs in v1.params.items():
        for a, b in zip(blobs, ours.params[name]):
            np.testing.assert_array_equal(b.diff, a.diff, err_msg=name)


def test_swap_of_a_v1_net_notes_the_upgrade_and_matches_caffe(v1_path, capsys):
    assert cli.main(["swap", str(v1_path), "--to", "SoftmaxCrossEntropyLoss", "--all"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0] == ("caffe-losses swap: note: %s: a V1 net (layers { type: HDF5_DATA ... }): "
                                   "upgraded to the current format as Caffe does when it loads it "
                                   "(upgrade_net_proto_text)" % v1_path)
    assert "layers {" not in out and 'type: "Convolution"' in out
    assert python_losses(out) == {"loss_cls": ("SoftmaxCrossEntropyLoss", [1.0], "loss_cls")}
    assert_same_as_cpp(v1_path.read_text(), out, caffe.TRAIN, ["loss_cls", "loss_tags", "loss_l2"])


def test_deploy_of_a_v1_net_has_a_head_per_loss(v1_path, capsys):
    assert cli.main(["deploy", str(v1_path), "--input-shape", "2,3,8,8"]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "a V1 net" in err
    assert layer_list(parse(out)) == [
        ("data", "Input"), ("conv1", "Convolution"), ("relu1", "ReLU"), ("pool1", "Pooling"),
        ("fc_cls", "InnerProduct"), ("prob", "Softmax"), ("fc_tags", "InnerProduct"),
        ("tags_prob", "Sigmoid")]  # the Sigmoid the net has serves the tags and the Euclidean head
    outputs = load_deploy(out, {"data": (2, 3, 8, 8)})
    assert sorted(outputs) == ["prob", "tags_prob"]


def test_check_of_a_v1_net_notes_the_upgrade(v1_path, capsys):
    assert cli.main(["check", str(v1_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "no problems found in 1 file(s)\n"
    assert err.startswith("caffe-losses check: note: %s: a V1 net" % v1_path)


@pytest.mark.parametrize("text, message", [
    ('layers { layer { name: "conv" type: "conv" } }', "a V0 net \\(layers { layer { ... } }\\): convert it "
                                                       "with Caffe's upgrade_net_proto_text first"),
    ('layer { name: "a" type: "ReLU" }\nlayers { name: "b" type: RELU }',
     "the net has both 'layer' and V1 'layers' entries"),
])
def test_nets_caffe_does_not_upgrade_are_refused(text, message):
    with pytest.raises(PrototxtError, match=message):
        prototxt.upgrade(parse(text))
    with pytest.raises(PrototxtError, match=message):
        prototxt.check(parse(text))
