"""Using the project as Caffe users do: NetSpec, the prototxt tool, every prototxt in the
repository, and the pycaffe training script."""
import glob
import os
import re
import subprocess
import sys

import caffe
import numpy as np
import pytest
from caffe import layers as L
from caffe.proto import caffe_pb2
from google.protobuf import text_format

import caffe_losses
from caffe_losses import netspec
from caffe_losses.params import ParamError, parse_literal
from nets import make_net

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# every layer's NetSpec helper, by layer name (helpers are named after their layer)
HELPERS = {row.name: getattr(netspec, netspec.helper_name(row.name))
           for row in caffe_losses.table.LAYERS}


def parse(text):
    return text_format.Merge(text, caffe_pb2.NetParameter())


# -- NetSpec -----------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "prototxt", "*.prototxt"))),
                         ids=os.path.basename)
def test_netspec_output_matches_the_snippet(path):
    snippet = parse(open(path).read()).layer[0]
    name = snippet.python_param.layer
    cls = getattr(caffe_losses, name)
    n = caffe.NetSpec()
    defaults = {key: param.default for key, param in cls.PARAMS.items()}
    if name in caffe_losses.DATA:  # no bottoms; the keys it needs as the snippet gives them
        given = parse_literal(snippet.python_param.param_str)
        defaults.update((key, given[key]) for key, param in cls.PARAMS.items() if param.required)
        outputs = HELPERS[name](**defaults)
    else:
        n[snippet.bottom[0]], n[snippet.bottom[1]] = L.Input(ntop=2)
        outputs = HELPERS[name](n[snippet.bottom[0]], n[snippet.bottom[1]], **defaults)
    for top, blob in zip(snippet.top, outputs if len(snippet.top) > 1 else [outputs]):
        n[top] = blob
    generated = [l for l in n.to_proto().layer if l.type == "Python"][0]
    assert generated.python_param.module == snippet.python_param.module
    assert generated.python_param.layer == name
    assert parse_literal(generated.python_param.param_str) == parse_literal(snippet.python_param.param_str)
    assert list(generated.loss_weight) == list(snippet.loss_weight)
    assert list(generated.bottom) == list(snippet.bottom) and list(generated.top) == list(snippet.top)
    assert [r.phase for r in generated.include] == [r.phase for r in snippet.include]


def test_netspec_validates_when_the_net_is_written():
    n = caffe.NetSpec()
    n.score, n.label = L.Input(ntop=2)
    with pytest.raises(ParamError, match="unknown param_str key 'gama'. Did you mean 'gamma'"):
        netspec.sigmoid_focal_loss(n.score, n.label, gama=1)


def test_each_helper_is_named_after_its_layer_an_acronym_one_word():
    assert netspec.zlpr_loss is HELPERS["ZLPRLoss"] and not hasattr(netspec, "z_l_p_r_loss")
    assert [netspec.helper_name(name) for name in ("MultiLabelSoftmaxLoss", "SigmoidFocalLoss",
                                                   "MultiLabelImageData")] == [
        "multilabel_softmax_loss", "sigmoid_focal_loss", "multilabel_image_data"]


def test_netspec_takes_numpy_numbers_and_arrays():
    n = caffe.NetSpec()
    n.score, n.label = L.Input(shape=[dict(dim=[4, 3]), dict(dim=[4, 3])], ntop=2)
    n.loss = netspec.sigmoid_focal_loss(n.score, n.label, gamma=np.float32(1.5),
                                        class_weight=np.array([1.0, 2.0, 3.0]),
                                        ignore_label=np.int64(-1), loss_weight=np.float32(0.5))
    layer = [l for l in n.to_proto().layer if l.type == "Python"][0]
    assert parse_literal(layer.python_param.param_str) == {
        "gamma": 1.5, "class_weight": [1.0, 2.0, 3.0], "ignore_label": -1}
    assert list(layer.loss_weight) == [0.5]
    net = make_net(str(n.to_proto()))
    net.blobs["score"].data[...] = np.random.default_rng(0).normal(size=(4, 3))
    net.blobs["label"].data[...] = np.eye(3)[[0, 1, 2, 0]]
    assert np.isfinite(net.forward()["loss"])


def test_netspec_suggests_the_nearest_keyword():
    n = caffe.NetSpec()
    n.score, n.label = L.Input(ntop=2)
    with pytest.raises(ParamError, match="unknown param_str key 'lossweight'. Did you mean "
                                         "'loss_weight'?"):
        netspec.softmax_cross_entropy_loss(n.score, n.label, lossweight=2)
    with pytest.raises(ParamError, match="unknown param_str key 'phses'. Did you mean 'phase'?"):
        netspec.multilabel_accuracy(n.score, n.label, phses="TEST")


@pytest.mark.parametrize("phase,expected", [("train", caffe.TRAIN), ("TEST", caffe.TEST),
                                            ("Test", caffe.TEST), (caffe.TRAIN, caffe.TRAIN)])
def test_netspec_takes_a_phase_by_name_in_any_case(phase, expected):
    n = caffe.NetSpec()
    n.score, n.label = L.Input(ntop=2)
    n.loss = netspec.zlpr_loss(n.score, n.label, phase=phase)
    n.metrics = netspec.multilabel_accuracy(n.score, n.label, phase=phase, ntop=1)
    layers = [l for l in n.to_proto().layer if l.type == "Python"]
    assert [[rule.phase for rule in l.include] for l in layers] == [[expected], [expected]]


@pytest.mark.parametrize("phase", ["val", 2, True])
def test_netspec_names_a_phase_it_does_not_know(phase):
    n = caffe.NetSpec()
    n.score, n.label = L.Input(ntop=2)
    with pytest.raises(ParamError, match=r"ZLPRLoss: phase must be 'TRAIN' or 'TEST' \(or "
                                         r"caffe.TRAIN, caffe.TEST\), or None for both phases; "
                                         r"got %s" % re.escape(repr(phase))):
        netspec.zlpr_loss(n.score, n.label, phase=phase)


def test_netspec_net_builds_and_trains_a_step():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[8, 5]))
    n.label = L.Input(shape=dict(dim=[8, 3]))
    n.score = L.InnerProduct(n.data, num_output=3, weight_filler=dict(type="xavier"))
    n.loss = netspec.sigmoid_focal_loss(n.score, n.label, gamma=1.0, normalization="positive")
    net = make_net(str(n.to_proto()))
    net.blobs["data"].data[...] = np.random.default_rng(0).normal(size=(8, 5))
    net.blobs["label"].data[...] = np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1]]
    net.forward()
    net.backward()
    assert np.abs(net.params["score"][0].diff).max() > 0  # the loss weight made it a loss


# -- the prototxt tool ----------------------------------------------------------------

LENET = """name: "LeNet"
layer { name: "mnist" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 1 dim: 28 dim: 28 } shape { dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip2" type: "InnerProduct" bottom: "pool1" top: "ip2"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss"
  loss_param { normalization: BATCH_SIZE } }
"""

FCN = """name: "FCN"
layer { name: "input" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 dim: 1 dim: 8 dim: 8 } } }
layer { name: "score_fr" type: "Convolution" bottom: "data" top: "score"
  convolution_param { num_output: 21 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_weight: 2 include { phase: TRAIN }
  loss_param { ignore_label: 255 normalize: false } }
"""


def run_cli(*args, text=None, tmp_path=None):
    path = None
    if text is not None:
        path = os.path.join(str(tmp_path), "net.prototxt")
        with open(path, "w") as f:
            f.write(text)
        args = tuple(a if a != "NET" else path for a in args)
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "caffe_losses"] + list(args), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def test_swap_lenet_softmax_with_loss(tmp_path):
    result = run_cli("swap", "NET", "--to", "SoftmaxCrossEntropyLoss", "--param", "label_smoothing=0.1",
                     text=LENET, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    net = parse(result.stdout)
    loss = [l for l in net.layer if l.name == "loss"][0]
    assert (loss.type, loss.python_param.layer) == ("Python", "SoftmaxCrossEntropyLoss")
    assert list(loss.bottom) == ["ip2", "label"] and list(loss.top) == ["loss"]
    assert list(loss.loss_weight) == [1.0]  # C++'s implicit weight made explicit
    assert parse_literal(loss.python_param.param_str) == {"normalization": "batch_size",
                                                          "label_smoothing": 0.1}
    assert [l.type for l in net.layer if l.name == "accuracy"] == ["Accuracy"]  # untouched
    built = make_net(result.stdout)
    built.blobs["label"].data[...] = [1, 2, 3, 4]
    assert np.isfinite(float(built.forward()["loss"]))


def test_swap_fcn_carries_ignore_label_weight_and_rules(tmp_path):
    result = run_cli("swap", "NET", "--to", "SoftmaxFocalLoss", text=FCN, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    loss = parse(result.stdout).layer[-1]
    assert parse_literal(loss.python_param.param_str) == {"ignore_label": 255, "normalization": "batch_size"}
    assert list(loss.loss_weight) == [2.0]
    assert [r.phase for r in loss.include] == [caffe.TRAIN]
    assert not loss.HasField("loss_param")
    net = make_net(result.stdout)
    net.blobs["label"].data[...] = 255
    net.blobs["label"].data[0, 0, :4] = 3
    assert np.isfinite(float(net.forward()["loss"]))


def test_swap_to_a_dense_label_loss_says_the_labels_must_change(tmp_path):
    result = run_cli("swap", "NET", "--to", "SigmoidFocalLoss", text=LENET, tmp_path=tmp_path)
    assert result.returncode == 0
    assert "SigmoidFocalLoss takes dense labels (one label per score)" in result.stderr


def test_swap_rejects_bad_parameters_before_writing(tmp_path):
    result = run_cli("swap", "NET", "--to", "SigmoidFocalLoss", "--param", "gama=1", text=LENET,
                     tmp_path=tmp_path)
    assert result.returncode != 0 and "Did you mean 'gamma'" in result.stderr and not result.stdout


def test_deploy_of_the_digits_example_builds(tmp_path):
    result = run_cli("deploy", os.path.join(REPO, "prototxt/digits_multilabel/train_val.prototxt"),
                     "--input-shape", "2,1,24,24")
    assert result.returncode == 0, result.stderr
    net = make_net(result.stdout, caffe.TEST)
    assert "label" not in net.blobs and "loss" not in net.blobs and "map" not in net.blobs
    net.blobs["data"].data[...] = np.random.default_rng(0).random((2, 1, 24, 24))
    out = net.forward()
    # the example's loss is SigmoidCrossEntropyLoss: deploy puts a Sigmoid on its scores
    assert "type: \"Sigmoid\"" in result.stdout and out["prob"].shape == (2, 10)
    np.testing.assert_allclose(out["prob"], 1 / (1 + np.exp(-net.blobs["score"].data)), rtol=1e-5)


def test_check_reports_missing_loss_weight_bad_keys_and_bottoms(tmp_path):
    text = """layer { name: "in" type: "Input" top: "s" top: "l" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "a" type: "Python" bottom: "s" bottom: "l" top: "a"
  python_param { module: "caffe_losses" layer: "SigmoidFocalLoss" param_str: "{'gama': 1}" } }
layer { name: "b" type: "Python" bottom: "s" top: "b" loss_weight: 1
  python_param { module: "caffe_losses" layer: "SoftmaxCrossEntropyLoss" } }
"""
    result = run_cli("check", "NET", text=text, tmp_path=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any("layer 'a' (SigmoidFocalLoss): SigmoidFocalLoss: unknown param_str key 'gama'" in l for l in lines)
    assert any("layer 'a' (SigmoidFocalLoss): no loss_weight" in l for l in lines)
    assert any("layer 'b' (SoftmaxCrossEntropyLoss): takes 2 or 3 bottoms" in l for l in lines)
    assert len(lines) == 3


def test_check_finds_nothing_wrong_in_the_repository_nets():
    paths = sorted(glob.glob(os.path.join(REPO, "prototxt", "*.prototxt"))
                   + glob.glob(os.path.join(REPO, "prototxt", "*", "*.prototxt"))
                   + glob.glob(os.path.join(REPO, "examples", "*", "*.prototxt")))
    nets = [p for p in paths if "solver" not in os.path.basename(p)]
    result = run_cli("check", *nets)
    assert result.returncode == 0, result.stdout
    assert "no problems found in %d file(s)" % len(nets) in result.stdout


# -- every prototxt in the repository loads in Caffe ---------------------------------

def make_example_data(tmp_path):
    """Small data sets for the example nets, in a temporary folder; returns source rewrites."""
    env = dict(os.environ, PYTHONPATH=REPO)
    toy, digits = str(tmp_path / "toy"), str(tmp_path / "digits")
    subprocess.run([sys.executable, os.path.join(REPO, "examples/toy_multilabel/make_data.py"), toy],
                   env=env, check=True, stdout=subprocess.PIPE)
    subprocess.run([sys.executable, os.path.join(REPO, "examples/digits_multilabel/make_data.py"), digits,
                    "--train", "200", "--test", "100", "--images"], env=env, check=True,
                   stdout=subprocess.PIPE)
    return {"examples/toy_multilabel/data/": toy + "/", "examples/digits_multilabel/data/": digits + "/"}


ALL_PROTOTXT = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "**", "*.prototxt"),
                                                                    recursive=True)
                      if "/output/" not in p and "/data/" not in p)


@pytest.mark.parametrize("relpath", ALL_PROTOTXT)
def test_every_prototxt_in_the_repository_loads(relpath, tmp_path):
    path = os.path.join(REPO, relpath)
    text = open(path).read()
    if "solver" in os.path.basename(relpath):
        solver = text_format.Merge(text, caffe_pb2.SolverParameter())
        assert os.path.exists(os.path.join(REPO, solver.net)), solver.net
        return
    if relpath.startswith("prototxt/") and relpath.count("/") == 1:
        return  # the snippets are built in test_prototxt_snippets.py
    net = parse(text)
    images = [l for l in net.layer if l.python_param.layer in caffe_losses.DATA]
    rewrites = make_example_data(tmp_path) if images or any(l.type == "HDF5Data" for l in net.layer) else {}
    for layer in net.layer:
        for old, new in rewrites.items():
            if layer.hdf5_data_param.source.startswith(old):
                layer.hdf5_data_param.source = new + layer.hdf5_data_param.source[len(old):]
            if layer.python_param.layer in caffe_losses.DATA:  # its list and image folder
                params = parse_literal(layer.python_param.param_str)
                for key in ("source", "root_folder"):
                    if params[key].startswith(old):
                        params[key] = new + params[key][len(old):]
                layer.python_param.param_str = repr(params)
    for phase in (caffe.TRAIN, caffe.TEST):
        built = make_net(text_format.MessageToString(net), phase)
        assert len(built.layers) > 0


# -- the pycaffe training script --------------------------------------------------------

def test_train_script_reports_metrics_snapshots_resumes_and_plots(tmp_path):
    rewrites = make_example_data(tmp_path)
    net = parse(open(os.path.join(REPO, "prototxt/digits_multilabel/train_val.prototxt")).read())
    for layer in net.layer:
        if layer.type == "HDF5Data":
            layer.hdf5_data_param.source = layer.hdf5_data_param.source.replace(
                "examples/digits_multilabel/data/", rewrites["examples/digits_multilabel/data/"])
            if layer.include[0].phase == caffe.TEST:
                layer.hdf5_data_param.batch_size = 50
    net_path = tmp_path / "train_val.prototxt"
    net_path.write_text(text_format.MessageToString(net))
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s"\ntest_iter: 2\ntest_interval: 20\nbase_lr: 0.02\nmomentum: 0.9\n'
                      'lr_policy: "fixed"\ndisplay: 10\nmax_iter: 40\nsnapshot: 20\n'
                      'snapshot_prefix: "%s/out/digits"\nrandom_seed: 1\nsolver_mode: CPU\n'
                      % (net_path, tmp_path))
    env = dict(os.environ, PYTHONPATH=REPO)
    first = subprocess.run([sys.executable, "-m", "caffe_losses.train", "--solver", str(solver), "--quiet"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "iteration 20: test mAP" in first.stdout and "final test: mAP" in first.stdout
    assert (tmp_path / "out" / "curves.png").stat().st_size > 1000
    assert (tmp_path / "out" / "digits_iter_40.solverstate").exists()
    solver.write_text(solver.read_text().replace("max_iter: 40", "max_iter: 60"))
    resumed = subprocess.run([sys.executable, "-m", "caffe_losses.train", "--solver", str(solver), "--quiet",
                              "--resume", str(tmp_path / "out" / "digits_iter_40.solverstate")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "trained 60 iterations" in resumed.stdout and "iteration 60: test mAP" in resumed.stdout
    assert "iteration 20: test mAP" not in resumed.stdout
