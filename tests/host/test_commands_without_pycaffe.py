"""The two commands on a machine without pycaffe: one line that says what to install, exit 2,
no traceback. (The image has pycaffe; tests/in_caffe tests the missing and unparsable files.)"""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("command", [["-m", "caffe_losses", "check", "net.prototxt"],
                                     ["-m", "caffe_losses.train", "--solver", "solver.prototxt"]])
def test_no_pycaffe_is_one_line_and_exit_2(tmp_path, command):
    # a module named caffe that cannot be imported stands in for a machine without pycaffe
    (tmp_path / "caffe").mkdir()
    (tmp_path / "caffe" / "__init__.py").write_text("raise ImportError('No module named caffe')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), REPO]))
    result = subprocess.run([sys.executable] + command, cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "needs pycaffe" in result.stderr and "python3-caffe" in result.stderr
