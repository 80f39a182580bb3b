"""python3 -m caffe_losses: the prototxt tool (swap, deploy, check, class-weights); see caffe_losses.cli."""
import sys

from .cli import main

sys.exit(main())
