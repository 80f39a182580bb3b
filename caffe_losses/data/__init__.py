"""MultiLabelImageData: image files and their labels from a list file, pixel for pixel as
Caffe's ImageData, with worker processes that make the next batches while the net runs
(docs/data.md). One job per module:

* :mod:`.listfile`: the list file, its lines and labels (``ImageList``);
* :mod:`.imagefile`: one image file decoded, and the checks Caffe lacks (a folder, a
  file cut short);
* :mod:`.transform`: Caffe's pixel pipeline: resize, crop, mirror, mean, scale;
* :mod:`.recipe`: what batch ``b`` holds (order, shuffle, shards, random draws);
* :mod:`.workers`: the scheduling loop of the workers, with its two back-ends
  :mod:`.processes` (the default; entry file ``worker_main.py``) and :mod:`.threads`;
* :mod:`.layer`: the row of the table and ``ImageBatches``, what the Caffe layer holds;
* :mod:`.check_list`: ``caffe-losses check-list``, the list checked before training.
"""
from .layer import LAYERS, ImageBatches  # noqa: F401
