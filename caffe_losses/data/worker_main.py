"""The entry of a MultiLabelImageData worker process (:mod:`.processes` starts it):

    python3 .../caffe_losses/data/worker_main.py TASKS ANSWERS MEMORY

It is run as a file, not as ``python3 -m caffe_losses.data...``: importing any module of
a package runs the package's ``__init__.py`` first, and ``caffe_losses/__init__.py``
imports every loss (and numba) and tries pycaffe, seconds of start-up and tens of MB
that a worker has no use for. So this file registers ``caffe_losses`` (the name of the
package's folder) as a bare package, a module whose ``__path__`` is the package's
folder but whose ``__init__.py`` is not run (what Python makes of a namespace
package), and then imports ``caffe_losses.data.*`` as usual: the worker runs the same
modules, under the same names, as the layer (its exceptions and the pickled recipe
unpickle there as the same classes), and only those it needs.
"""
import signal
import sys

for _number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(_number, signal.SIG_IGN)  # the training's to handle (processes.py says why)
del sys.path[0]  # this file's folder: its modules are imported as caffe_losses.data.*, not bare

import importlib.machinery  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402


def bare_package(name, folder):
    """Register ``name`` as a package at ``folder`` without running its ``__init__.py``."""
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [folder]
    sys.modules[name] = importlib.util.module_from_spec(spec)


if __name__ == "__main__":
    # the package's name is its folder's (a renamed copy, as a benchmark's baseline, works too)
    folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bare_package(os.path.basename(folder), folder)
    processes = importlib.import_module(os.path.basename(folder) + ".data.processes")
    processes.run(*(int(a) for a in sys.argv[1:4]))
