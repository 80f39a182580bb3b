"""Reading and writing prototxt files through pycaffe's protobuf messages.

Files are read as Caffe reads them: protobuf's C++ text parser takes bytes, so a comment
in Latin-1 or GBK is no obstacle; only a quoted string must be UTF-8 here, because
Python's protobuf keeps strings as text. Output is written to a temporary file beside
the target and renamed over it, so a failed command leaves every file as it was and
``-o`` may name the input file.
"""
import os
import re
import tempfile


class PrototxtError(Exception):
    """What the prototxt tool refuses: a file that is missing, empty or does not parse, a net
    it cannot work on, an option that does not fit the net, no pycaffe. The message is one
    line naming the file, layer or option and the fix."""


def caffe_proto():
    """pycaffe's ``caffe_pb2`` and protobuf's ``text_format``; PrototxtError without pycaffe."""
    try:
        from caffe.proto import caffe_pb2
        from google.protobuf import text_format
    except ImportError as exc:
        raise PrototxtError("reading prototxt files needs pycaffe (%s): install Debian's "
                            "python3-caffe, or run this in tools/caffe-env" % exc) from None
    return caffe_pb2, text_format


def read_text(path):
    """The text of ``path``, bytes that are not UTF-8 kept as surrogate escapes (they may
    only stand in comments); PrototxtError for a missing, binary or empty file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise PrototxtError("no such file: %s" % path) from None
    except IsADirectoryError:
        raise PrototxtError("%s is a folder, not a prototxt file" % path) from None
    except OSError as exc:
        raise PrototxtError("%s: %s" % (path, exc.strerror or exc)) from None
    if b"\0" in data:
        raise PrototxtError("%s: not a text file (a binary .caffemodel or .solverstate?)" % path)
    text = data.decode("utf-8", "surrogateescape")
    lines = [line.strip() for line in text.splitlines()]
    if not any(lines):
        raise PrototxtError("%s is empty" % path)
    if all(not line or line.startswith("#") for line in lines):
        raise PrototxtError("%s holds only comments" % path)
    return text


def read_prototxt(path, message):
    """Merge the text-format file ``path`` into ``message`` and return it; raises PrototxtError."""
    _, text_format = caffe_proto()
    text = read_text(path)
    try:
        text_format.Merge(text, message)
    except text_format.ParseError as exc:
        raise PrototxtError(parse_error_text(path, exc)) from None
    return message


def parse_error_text(path, exc):
    """``PATH:LINE:COL: message`` on one line, from a text_format.ParseError (``LINE:COL : message``)."""
    # Every protobuf version puts the location in the message; GetLine() is only in newer ones.
    text = re.sub(r"\s*\n\s*", " ", str(exc).strip())
    found = re.match(r"(\d+(?::\d+)?) : (.*)", text)
    if found and "surrogates not allowed" in text:
        return ("%s:%s: a quoted string that is not UTF-8 (Latin-1 or GBK bytes?): re-encode the "
                "file as UTF-8 (iconv -f GBK -t UTF-8); bytes of any encoding are fine in comments"
                % (path, found.group(1)))
    return "%s:%s: %s" % ((path,) + found.groups()) if found else "%s: %s" % (path, text)


def net_text(net):
    """The text format of a NetParameter."""
    _, text_format = caffe_proto()
    return text_format.MessageToString(net)


def output_problem(path, option="-o"):
    """Why ``path``, given as ``option``, cannot be written (a sentence naming it), or None."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "%s %s is a folder; give a file name" % (option, path)
    if not os.path.isdir(folder):
        return "%s %s: there is no folder %s" % (option, path, folder)
    if os.path.exists(path) and not os.path.isfile(path):
        return "%s %s is not a regular file" % (option, path)
    return None


def write_text(text, path):
    """Write ``text`` to ``path`` through a temporary file renamed over it (the old file, if
    any, stays whole until then, and keeps its permissions); PrototxtError naming the path."""
    _write(text.encode("utf-8"), path)


def write_bytes(data, path, option="-o"):
    """write_text for bytes (a caffemodel); ``option`` names the path in messages."""
    _write(data, path, option)


def _write(data, path, option="-o"):
    problem = output_problem(path, option)
    if problem:
        raise PrototxtError(problem)
    target = os.path.realpath(path)
    try:
        fd, temporary = tempfile.mkstemp(prefix=".%s." % os.path.basename(target),
                                         dir=os.path.dirname(target))
    except OSError as exc:
        raise PrototxtError("%s %s: cannot write there (%s)" % (option, path, exc.strerror or exc)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        mode = os.stat(target).st_mode if os.path.exists(target) else 0o666 & ~_umask()
        os.chmod(temporary, mode & 0o7777)
        os.replace(temporary, target)
    except OSError as exc:
        os.unlink(temporary)
        raise PrototxtError("%s %s: cannot write there (%s)" % (option, path, exc.strerror or exc)) from None


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
