"""The losses, one module per loss family: formula, numpy reference, kernels, layer rows.

Every module here that defines ``LAYERS`` (a list of :class:`caffe_losses.params.Layer`)
adds its rows to the table of layers (:mod:`caffe_losses.table`); nothing else lists
them.
"""
import importlib
import pkgutil


def layer_rows():
    """The ``LAYERS`` rows of every module in this package, in module-name order."""
    rows = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module("%s.%s" % (__name__, info.name))
        rows.extend(getattr(module, "LAYERS", ()))
    return rows
