"""Shared test set-up.

tests/host/ needs numpy only. tests/in_caffe/ needs pycaffe (run them in the
image: tools/caffe-env). With --require-caffe (what `make test` passes inside
the image) a Caffe test that is skipped, or a run with no Caffe test at all,
fails the session instead of looking green.
"""
import os
import sys


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # reference.py, gradcheck.py
sys.path.insert(0, os.path.dirname(HERE))  # the checkout, ahead of an installed copy

CAFFE_DIR = os.path.join(HERE, "in_caffe")


def pytest_addoption(parser):
    parser.addoption("--require-caffe", action="store_true",
                     help="fail unless the Caffe tests ran and none was skipped")


def _is_caffe_test(nodeid_or_path):
    return str(nodeid_or_path).replace("\\", "/").startswith("tests/in_caffe/") or \
        os.path.abspath(str(nodeid_or_path)).startswith(CAFFE_DIR + os.sep)


class CaffeTally(object):
    def __init__(self):
        self.passed = 0
        self.skipped = []

    def pytest_runtest_logreport(self, report):
        if not _is_caffe_test(report.fspath):
            return
        if report.skipped:
            self.skipped.append(report.nodeid)
        elif report.when == "call" and report.passed:
            self.passed += 1


def pytest_configure(config):
    if config.getoption("--require-caffe"):
        config._caffe_tally = CaffeTally()
        config.pluginmanager.register(config._caffe_tally, "caffe_tally")


def pytest_sessionfinish(session, exitstatus):
    tally = getattr(session.config, "_caffe_tally", None)
    if tally is None:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    problem = None
    if tally.skipped:
        problem = "%d Caffe tests were skipped (first: %s)" % (len(tally.skipped), tally.skipped[0])
    elif tally.passed == 0:
        problem = "no Caffe test ran"
    if reporter:
        reporter.write("\n")
    if problem:
        if reporter:
            reporter.write_line("--require-caffe: %s; failing the run." % problem, red=True)
        session.exitstatus = 1
    elif reporter:
        reporter.write_line("--require-caffe: %d Caffe tests passed, none skipped." % tally.passed)
