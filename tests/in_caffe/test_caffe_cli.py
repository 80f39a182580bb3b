"""The layer under the `caffe` command-line tool, as users train with it."""
import os
import re
import subprocess

from nets import input_layer, python_loss

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def caffe_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["GLOG_minloglevel"] = "0"
    env["GLOG_logtostderr"] = "1"
    return env


def test_toy_example_trains_and_its_loss_falls():
    result = subprocess.run(["bash", "examples/toy_multilabel/run.sh"], cwd=REPO, env=caffe_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    first, last = map(float, re.search(r"training loss: first (\S+), last (\S+)", result.stdout).groups())
    assert last < 0.5 * first
    assert os.path.exists(os.path.join(REPO, "examples/toy_multilabel/output/toy_iter_400.caffemodel"))


def test_bad_param_str_is_readable_in_the_caffe_log(tmp_path):
    model = tmp_path / "net.prototxt"
    model.write_text(input_layer("score", (2, 3)) + input_layer("label", (2, 3))
                     + python_loss("MultiLabelSoftmaxLoss", ["score", "label"], "{'normalisation': 'valid'}"))
    result = subprocess.run(["caffe", "time", "-model", str(model), "-iterations", "1"],
                            env=caffe_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=120)
    assert result.returncode != 0
    assert ("MultiLabelSoftmaxLoss: unknown param_str key 'normalisation'. Did you mean "
            "'normalization'?") in result.stdout
