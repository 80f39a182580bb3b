"""Set-up of the host tests (tests/conftest.py has the shared one)."""
import pytest

from caffe_losses import jit


def pytest_collection_modifyitems(session, config, items):
    # The test that compiles every kernel in a new process goes first: in a fresh run its
    # compiled kernels fill the session's empty cache, and the tests after it load them
    # instead of compiling them again (test_kernel_cache.py)
    first = [item for item in items if item.name.startswith(
        "test_every_kernel_compiles_without_a_warning")]
    items[:] = first + [item for item in items if item not in first]


@pytest.fixture(params=["kernels", "numpy"])
def path(request, monkeypatch):
    """The kernel path (numba installed: kernels where they take the blob) or numpy's."""
    if request.param == "kernels" and not jit.ENABLED:
        pytest.skip("needs numba")
    if request.param == "numpy":
        monkeypatch.setattr(jit, "ENABLED", False)
    return request.param
