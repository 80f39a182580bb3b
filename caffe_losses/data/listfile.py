"""The list file of MultiLabelImageData: one image per line, its path and its labels.

The rule for a line, the same for both kinds of labels: **the labels are the numbers at
the end of the line, and the path is everything before them**, spaces included (as
Caffe's ImageData, which takes everything before the last space as the path). So
``my photos/cat 1.jpg 3 7`` is the image ``my photos/cat 1.jpg`` with classes 3 and 7.
A path therefore cannot end in a field that is a number (``scan 12``): rename the file.

* ``labels: "sparse"``: the class indices present, each in ``[0, num_classes)``, any
  number of them (none: every label 0).
* ``labels: "dense"``: exactly ``num_classes`` numbers, copied as written (0/1, soft
  targets, or a value the loss's ``ignore_label`` skips).

The file is UTF-8, with or without the byte-order mark that Windows Notepad writes, with
Unix or Windows line ends. Blank lines, and lines whose first character other than
white space is ``#``, are skipped (comments; a path that starts with ``#`` is written
``./#name``).
"""
import math

import numpy as np

NAME = "MultiLabelImageData"
FORMAT = "one 'path label ...' line per image"
BOM = b"\xef\xbb\xbf"


def error(message):
    return ValueError("%s: %s" % (NAME, message))


def line_error(source, line, problem, joiner=": "):
    """A ValueError for one line of a list file, naming the file and the line. It keeps
    ``source``, ``line`` and ``problem`` apart for ``caffe-losses check-list``, which
    prints ``file:line: problem``. (A ValueError itself, not a subclass: its type name
    is what the ``caffe train`` log shows.)"""
    exc = ValueError("%s: %s line %d%s%s" % (NAME, source, line, joiner, problem))
    exc.source, exc.line, exc.problem = source, line, problem
    return exc


def is_number(field):
    try:
        float(field)
    except ValueError:
        return False
    return True


def read_lines(source):
    """``(line number, text)`` of each image line of the file ``source``: comments and
    blank lines skipped, the BOM and line ends taken off."""
    try:
        with open(source, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise error("cannot read the list file %r (source): %s; set 'source' to a file with %s"
                    % (source, exc.strerror or exc, FORMAT))
    if raw.startswith(BOM):
        raw = raw[len(BOM):]
    for number, line in enumerate(raw.split(b"\n"), 1):
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise line_error(source, number, "is not UTF-8 text (%s); save the list file as UTF-8"
                             % exc.reason, joiner=" ")
        if text and not text.startswith("#"):
            yield number, text


def split_line(text, source, number, num_classes, dense):
    """The path and the label fields of a line (see the module's docstring)."""
    fields = text.split()
    count = 0  # the numbers at the end; the first field is always the path's
    while count < len(fields) - 1 and is_number(fields[-1 - count]):
        count += 1
    if dense and count != num_classes:
        if len(fields) > num_classes and count < num_classes:
            raise line_error(source, number, "the labels %s are not all numbers"
                             % " ".join(fields[-num_classes:]))
        raise line_error(source, number, "has %d labels; with labels 'dense' give one number per "
                         "class, num_classes = %d" % (count, num_classes), joiner=" ")
    labels = fields[len(fields) - count:]
    if len(fields) - count == 1:
        return fields[0], labels
    # a path with spaces: the text up to its last field, as written
    rest = text
    for field in reversed(labels):
        rest = rest[:rest.rindex(field)].rstrip()
    return rest, labels


def label_values(fields, source, number, num_classes, dense):
    """The numbers of a line's label fields: dense values, or sparse class indices."""
    if dense:
        values = [float(v) for v in fields]
        if not all(map(math.isfinite, values)):
            raise line_error(source, number, "the labels %s are not all finite numbers"
                             % " ".join(fields))
        return values
    try:
        values = [int(v) for v in fields]
    except ValueError:
        raise line_error(source, number, "the labels %s are not all class indices (integers); for "
                         "one number per class set labels: 'dense'" % " ".join(fields))
    bad = [v for v in values if not 0 <= v < num_classes]
    if bad:
        raise line_error(source, number, "label %d is outside [0, %d); fix the line or num_classes"
                         % (bad[0], num_classes))
    return values


def parse_line(text, source, number, num_classes, dense):
    """``(path, label values)`` of one image line; a :func:`line_error` if it is not usable."""
    path, fields = split_line(text, source, number, num_classes, dense)
    return path, label_values(fields, source, number, num_classes, dense)


class ImageList(object):
    """A parsed list file: ``paths``, the ``lines`` they are on, and their labels.

    Sparse labels are kept as one array of class indices with each image's slice
    (``starts``), dense labels as an ``(images, num_classes)`` float32 array. The first
    bad line raises its :func:`line_error`; with a list ``problems``, each bad line's
    error is appended to it instead and the line left out (``caffe-losses check-list``).
    """

    def __init__(self, source, num_classes, labels="sparse", problems=None):
        self.source = source
        self.num_classes = num_classes
        self.dense = labels == "dense"
        self.paths, self.lines, values, counts = [], [], [], []
        for number, text in read_lines(source):
            try:
                path, row = parse_line(text, source, number, num_classes, self.dense)
            except ValueError as exc:
                if problems is None:
                    raise
                problems.append(exc)
                continue
            self.paths.append(path)
            self.lines.append(number)
            values.extend(row)
            counts.append(len(row))
        if not self.paths and not problems:
            raise error("the list file %r (source) has no image lines; give %s" % (source, FORMAT))
        if self.dense:
            self.values = np.array(values, dtype=np.float32).reshape(len(self.paths), num_classes)
        else:
            self.values = np.array(values, dtype=np.int32)
            self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def where(self, i):
        return "%s line %d" % (self.source, self.lines[i])

    def line_error(self, i, problem):
        """The error of image ``i``'s line (:func:`line_error`)."""
        return line_error(self.source, self.lines[i], problem)

    def __len__(self):
        return len(self.paths)

    def fill_labels(self, items, out):
        """The label rows of the images ``items`` into ``out`` (items x num_classes)."""
        if self.dense:
            np.take(self.values, items, axis=0, out=out)
            return
        out[...] = 0
        for row, i in zip(out, items):
            row[self.values[self.starts[i]:self.starts[i + 1]]] = 1
