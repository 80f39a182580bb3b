"""A missing or broken prototxt makes the prototxt tool and the training script say so in one
line naming the file (and line:column), not in a traceback; the training script's output to
a log has plain progress lines, not progress-bar redraws."""
import os
import subprocess
import sys

import pytest

from test_training import net_text, write_data

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# line 5, column 8: a string without its quotes
BROKEN_NET = """name: "broken"
layer {
  name: "data"
  type: "Input"
  top: data
  input_param { shape { dim: 2 dim: 3 } }
}
"""
BROKEN_NET_AT = "net.prototxt:5:8: "

# line 3, column 11: a word where a number goes
BROKEN_SOLVER = """net: "net.prototxt"
base_lr: 0.01
max_iter: ten
"""
BROKEN_SOLVER_AT = "solver.prototxt:3:11: "


def run(module, *args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", module] + list(args), cwd=str(cwd), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=300)


def error_line(result):
    """The one line of stderr of a run that failed cleanly."""
    assert result.returncode > 0, (result.returncode, result.stdout, result.stderr)  # < 0: a signal
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert not result.stdout
    return lines[0]


# -- the prototxt tool --------------------------------------------------------------------

COMMANDS = {
    "check": ["check", "net.prototxt"],
    "swap": ["swap", "net.prototxt", "--to", "SigmoidFocalLoss"],
    "deploy": ["deploy", "net.prototxt", "--input-shape", "2,3"],
}


@pytest.mark.parametrize("module", ["caffe_losses", "caffe_losses.cli"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_names_a_missing_file(command, module, tmp_path):
    line = error_line(run(module, *COMMANDS[command], cwd=tmp_path))
    assert line == "caffe-losses: no such file: net.prototxt"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_names_the_line_and_column_of_a_syntax_error(command, tmp_path):
    (tmp_path / "net.prototxt").write_text(BROKEN_NET)
    line = error_line(run("caffe_losses", *COMMANDS[command], cwd=tmp_path))
    assert line.startswith("caffe-losses: " + BROKEN_NET_AT), line
    assert len(line) > len("caffe-losses: " + BROKEN_NET_AT)  # and the parser's message


def test_cli_check_stops_at_the_first_bad_file(tmp_path):
    (tmp_path / "good.prototxt").write_text('name: "good"\n')
    line = error_line(run("caffe_losses", "check", "good.prototxt", "missing.prototxt", cwd=tmp_path))
    assert line == "caffe-losses: no such file: missing.prototxt"


# -- the training script ------------------------------------------------------------------

def test_train_names_a_missing_solver(tmp_path):
    line = error_line(run("caffe_losses.train", "--solver", "solver.prototxt", cwd=tmp_path))
    assert line == "caffe_losses.train: no such file: solver.prototxt"


def test_train_names_the_line_and_column_of_a_solver_syntax_error(tmp_path):
    (tmp_path / "solver.prototxt").write_text(BROKEN_SOLVER)
    line = error_line(run("caffe_losses.train", "--solver", "solver.prototxt", cwd=tmp_path))
    assert line.startswith("caffe_losses.train: " + BROKEN_SOLVER_AT), line


def test_train_names_a_missing_net_before_caffe_aborts_on_it(tmp_path):
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt"\nbase_lr: 0.01\nmax_iter: 10\n')
    line = error_line(run("caffe_losses.train", "--solver", "solver.prototxt", cwd=tmp_path))
    assert line == "caffe_losses.train: no such file: net.prototxt (the net of solver.prototxt)"


def test_train_names_the_line_and_column_of_a_net_syntax_error(tmp_path):
    (tmp_path / "solver.prototxt").write_text('train_net: "net.prototxt"\nbase_lr: 0.01\nmax_iter: 10\n')
    (tmp_path / "net.prototxt").write_text(BROKEN_NET)
    line = error_line(run("caffe_losses.train", "--solver", "solver.prototxt", cwd=tmp_path))
    assert line.startswith("caffe_losses.train: " + BROKEN_NET_AT), line
    assert line.endswith(" (the net of solver.prototxt)")


def test_train_into_a_log_prints_plain_progress_lines_and_no_bar(tmp_path):
    directory = str(tmp_path)
    write_data(directory)
    (tmp_path / "net.prototxt").write_text(
        net_text(directory, "SigmoidCrossEntropyLoss", "multi", "{'pos_weight': 2.0}", None))
    (tmp_path / "solver.prototxt").write_text(
        'net: "%s/net.prototxt"\ntest_iter: 2\ntest_interval: 20\nbase_lr: 0.05\nmomentum: 0.9\n'
        'lr_policy: "fixed"\ndisplay: 10\nmax_iter: 40\nsnapshot: 0\n'
        'snapshot_prefix: "%s/out/tiny"\nrandom_seed: 3\nsolver_mode: CPU\n' % (directory, directory))
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-m", "caffe_losses.train", "--solver",
                             str(tmp_path / "solver.prototxt"), "--label-blob", "multi"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "\r" not in result.stdout and "it/s" not in result.stdout, result.stdout[-3000:]
    progress = [l for l in result.stdout.splitlines() if "/40: loss " in l]
    assert [l.split("/")[0] for l in progress] == ["iteration %d" % i for i in (10, 20, 30, 40)], progress
    assert "iteration 20: test mAP" in result.stdout and "iteration 40: test mAP" in result.stdout
    assert "final test: mAP" in result.stdout
