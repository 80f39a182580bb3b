"""The engine: the numba kernels of the losses, one module per loss family (named as its
module in :mod:`caffe_losses.losses`), beside the plumbing they share: :mod:`.jit`
(compiling, exp and log, helpers of several kernels) and :mod:`.plan` (a loss's kernels
and their arguments for one shape, which the core runs).

Each family module has its kernels and a ``plan`` function that picks them for a shape
and makes their buffers. Nothing here checks inputs or raises on them: a kernel declines
what it cannot take, and the loss's numpy reference, which checks everything, takes the
call.
"""
