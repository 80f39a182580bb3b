"""caffe-losses: the cross-entropy loss family as Caffe Python layers."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(HERE, "caffe_losses", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def read_readme():
    with open(os.path.join(HERE, "README.md")) as f:
        return f.read()


setup(
    name="caffe-losses",
    version=read_version(),
    description="Cross-entropy losses (multi-label softmax, sigmoid, focal, softmax) as Caffe Python layers",
    long_description=read_readme(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["caffe_losses", "caffe_losses.*"]),
    python_requires=">=3.8",
    # pycaffe is not on PyPI: it comes with Caffe (Debian: python3-caffe).
    install_requires=["numpy>=1.17"],
    # numba compiles the losses' kernels; without it they run their numpy reference.
    extras_require={"fast": ["numba"], "test": ["pytest", "hypothesis"]},
    entry_points={"console_scripts": ["caffe-losses=caffe_losses.cli:main"]},
    license="BSD-2-Clause",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
