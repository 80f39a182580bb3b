"""caffe_losses.prototxt as a library: swap and deploy on a NetParameter made in Python, with
notes returned, nothing printed, and one exception type (one line) for every refusal."""
import pytest
from caffe import layers as L
from caffe import NetSpec

from caffe_losses import class_weights, prototxt
from caffe_losses.prototxt import PrototxtError
from test_prototxt_tool import layer_list


def netspec_net():
    n = NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[2, 6]), dict(dim=[2])], ntop=2)
    n.fc = L.InnerProduct(n.data, num_output=3)
    n.loss = L.SoftmaxWithLoss(n.fc, n.label, loss_param=dict(ignore_label=-1))
    return n.to_proto()


def test_swap_and_deploy_on_a_netparameter_made_with_netspec(capsys):
    net = netspec_net()
    assert prototxt.swap(net, "SoftmaxFocalLoss", params={"gamma": 1.0}) == []
    loss = net.layer[-1]
    assert (loss.type, loss.python_param.layer) == ("Python", "SoftmaxFocalLoss")
    assert "'gamma': 1.0" in loss.python_param.param_str and "'ignore_label': -1" in loss.python_param.param_str
    assert prototxt.check(net) == []
    notes = []
    out = prototxt.deploy(net, notes=notes)
    assert layer_list(out) == [("data", "Input"), ("fc", "InnerProduct"), ("prob", "Softmax")]
    assert notes == [] and prototxt.opencv_warnings(out) == []
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("call, message", [
    (lambda tmp: prototxt.swap(netspec_net(), "FocalLoss"), "--to must be one of "),
    (lambda tmp: prototxt.deploy(netspec_net(), outputs="nothing"), "--outputs nothing: no head has that"),
    (lambda tmp: prototxt.read_net(str(tmp / "missing.prototxt")), "no such file: "),
    (lambda tmp: prototxt.write_text("x", str(tmp)), "-o %s is a folder; give a file name"),
    (lambda tmp: class_weights.from_file(str(tmp)), "%s is a folder; give an HDF5 file"),
])
def test_every_refusal_is_one_prototxt_error(call, message, tmp_path, capsys):
    with pytest.raises(PrototxtError) as error:
        call(tmp_path)
    assert str(error.value).startswith(message.replace("%s", str(tmp_path)))
    assert "\n" not in str(error.value)
    assert capsys.readouterr() == ("", "")
