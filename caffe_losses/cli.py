"""``caffe-losses`` (or ``python3 -m caffe_losses``): work on existing prototxt files.

    caffe-losses swap net.prototxt --to SigmoidFocalLoss [--layer NAME_OR_TOP | --all]
                      [--param gamma=1] [--stage S] [--level N] [-o out]
    caffe-losses deploy train_val.prototxt [--input-shape [NAME=]1,3,224,224 ...]
                        [--input-name A[,B]] [--outputs A[,B]] [--stage S] [--level N] [-o deploy.prototxt]
    caffe-losses check net.prototxt [more.prototxt ...] [--stage S] [--level N]
    caffe-losses class-weights LABELS.h5 [--dataset label] [--beta 0.999] [--kind pos_weight]
    caffe-losses check-list LIST [--root-folder DIR] [--labels sparse|dense] [--num-classes C] ...
    caffe-losses distill STUDENT.prototxt TEACHER_DEPLOY.prototxt TEACHER.caffemodel -o NET
                         [--weights-out W] [--prefix teacher_] [--temperature T] [--loss-weight W]
                         [--student-scores B] [--teacher-scores B] [--data-top A[,B]]
                         [--activation softmax|sigmoid] [--axis N] [--student-weights W]
                         [--stage S] [--level N]

The command-line front end: it parses options, calls caffe_losses.prototxt (and
caffe_losses.class_weights), prints, and returns the exit code: 0, 1 when check finds a
problem or the net does not allow what is asked, 2 for a file or usage error.
"""
import argparse
import ast
import os
import sys

from . import prototxt
from .prototxt import PrototxtError


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["class-weights"]:  # its own parser: class_weights_main below
        return class_weights_main(argv[1:], prog="caffe-losses class-weights")
    if argv[:1] == ["check-list"]:  # its own parser: caffe_losses/data/check_list.py
        from .data import check_list
        return check_list.main(argv[1:], prog="caffe-losses check-list")
    parser = argparse.ArgumentParser(prog="caffe-losses", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("class-weights", help="per-class weights (class_weight or pos_weight) from the "
                                         "label counts of an HDF5 file; see --help")
    sub.add_parser("check-list", help="check every line and image of a MultiLabelImageData list "
                                      "file before training; see --help")
    add_swap(sub.add_parser("swap", help="replace loss layers by one of caffe_losses"))
    add_deploy(sub.add_parser("deploy", help="derive a deploy net: Input instead of data, "
                                             "probabilities instead of losses"))
    p = sub.add_parser("check", help="report problems caffe_losses knows about, and what OpenCV "
                                     "cannot load from the deploy net")
    p.add_argument("nets", nargs="+")
    add_state(p)
    add_distill(sub.add_parser("distill", help="put a frozen teacher beside a student, with a "
                                               "DistillationLoss between their scores"))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    command = {"swap": run_swap, "deploy": run_deploy, "check": run_check, "distill": run_distill}[args.command]
    try:
        return command(parser, args)
    except PrototxtError as exc:
        sys.stderr.write("caffe-losses: %s\n" % exc)
        return 2


def add_state(p):
    p.add_argument("--stage", action="append", default=[], metavar="NAME",
                   help="a stage of the net state (repeatable), as caffe train -stage")
    p.add_argument("--level", type=int, help="the level of the net state, as caffe train -level "
                                             "(default 0)")


def add_swap(p):
    p.add_argument("net")
    p.add_argument("--to", required=True, help="the caffe_losses layer to put in")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--layer", help="name or top of the loss layer to replace (needed if there are several)")
    which.add_argument("--all", action="store_true",
                       help="replace every loss that takes the labels and inputs the new layer takes")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the new layer (repeatable), e.g. gamma=1.5")
    add_state(p)
    p.add_argument("-o", "--output", help="write here instead of standard output (may be the input file)")


def add_deploy(p):
    p.add_argument("net")
    p.add_argument("--input-shape", action="append", default=[], metavar="[NAME=]N,C,H,W",
                   help="the shape of an input (repeatable: once per input, in order or by name); "
                        "default: the shape the net's Input or DummyData layer gives")
    p.add_argument("--input-name", metavar="A[,B...]",
                   help="the input blobs (default: the data-layer tops the outputs need)")
    p.add_argument("--outputs", metavar="A[,B...]",
                   help="keep only these heads (score blobs, loss names or loss tops) or blobs, and "
                        "the layers they need (default: every head, every layer)")
    add_state(p)
    p.add_argument("-o", "--output", help="write here instead of standard output")


def add_distill(p):
    p.add_argument("student", help="the student's train_val prototxt")
    p.add_argument("teacher", help="the teacher's deploy prototxt")
    p.add_argument("teacher_weights", metavar="teacher.caffemodel", help="the teacher's trained weights")
    p.add_argument("-o", "--output", required=True, help="the distillation net to write")
    p.add_argument("--weights-out", metavar="W", help="the weights file to write: the teacher's "
                   "blobs under their new names (default: the -o path with .caffemodel)")
    p.add_argument("--prefix", default="teacher_", help="put before every teacher name (default: teacher_)")
    p.add_argument("--temperature", type=float, metavar="T", help="DistillationLoss's temperature "
                   "(default: the layer's, 4)")
    p.add_argument("--loss-weight", type=float, default=1.0, metavar="W",
                   help="the distillation loss's weight beside the student's own loss (default: 1)")
    p.add_argument("--student-scores", metavar="BLOB", help="default: what the student's loss reads")
    p.add_argument("--teacher-scores", metavar="BLOB", help="default: the teacher's output, before "
                   "a final Softmax or Sigmoid")
    p.add_argument("--data-top", metavar="A[,B]", help="the student's blobs that feed the teacher's "
                   "inputs, in their order (default: the same name, or the one data top)")
    p.add_argument("--activation", choices=("softmax", "sigmoid"),
                   help="default: as the student's loss (sigmoid for sigmoid-type losses)")
    p.add_argument("--axis", type=int, help="the class axis (default: the student's loss's)")
    p.add_argument("--student-weights", metavar="W", help="a caffemodel for the student, added to "
                   "the weights file")
    add_state(p)


def state_options(args):
    return dict(stages=args.stage or None, level=args.level)


def refuse(command, exc):
    """The one line for a command the net does not allow; exit code 1."""
    sys.stderr.write("caffe-losses %s: %s\n" % (command, exc))
    return 1


def notes_out(command, notes):
    for note in notes:
        sys.stderr.write("caffe-losses %s: note: %s\n" % (command, note))


def run_swap(parser, args):
    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error("--param takes KEY=VALUE, got %r" % item)
        params[key] = parse_value(value)
    check_output(args.output)
    notes = []
    net = prototxt.read_net(args.net, notes)
    try:
        notes += prototxt.swap(net, args.to, args.layer, params, every=args.all, **state_options(args))
    except PrototxtError as exc:
        return refuse("swap", exc)
    notes_out("swap", notes)
    write(prototxt.net_text(net), args.output)
    return 0


def run_deploy(parser, args):
    shapes = [parse_shape(parser, text) for text in args.input_shape]
    check_output(args.output)
    notes = []
    net = prototxt.read_net(args.net, notes)
    try:
        out = prototxt.deploy(net, shapes, args.input_name, args.outputs, notes=notes, **state_options(args))
    except PrototxtError as exc:
        return refuse("deploy", exc)
    notes_out("deploy", notes + prototxt.opencv_warnings(out))
    write(prototxt.net_text(out), args.output)
    return 0


def run_check(parser, args):
    notes = []
    nets = [prototxt.read_net(path, notes) for path in args.nets]  # every file read before any report
    notes_out("check", notes)
    problems = warnings = 0
    for path, net in zip(args.nets, nets):
        for problem in prototxt.check(net):
            print("%s: %s" % (path, problem))
            problems += 1
        for warning in prototxt.opencv_warnings(net, **state_options(args)):
            print("%s: warning: %s" % (path, warning))
            warnings += 1
    if problems:
        return 1
    print("no problems found in %d file(s)%s" % (len(args.nets), ", %d warning(s) about OpenCV's "
                                                 "importer" % warnings if warnings else ""))
    return 0


def run_distill(parser, args):
    weights_out = args.weights_out or os.path.splitext(args.output)[0] + ".caffemodel"
    if os.path.abspath(weights_out) == os.path.abspath(args.output):
        parser.error("--weights-out must differ from -o")
    for path, option in ((args.output, "-o"), (weights_out, "--weights-out")):
        check_output(path, option)  # and writable: two files, so that neither is written alone
        if not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
            raise PrototxtError("%s %s: cannot write there (its folder is not writable)" % (option, path))
    notes = []
    student = prototxt.read_net(args.student, notes)
    teacher = prototxt.read_net(args.teacher, notes)
    teacher_weights = prototxt.read_caffemodel(args.teacher_weights)
    student_weights = args.student_weights and prototxt.read_caffemodel(args.student_weights)
    try:
        net, weights, more = prototxt.distill(
            student, teacher, teacher_weights, args.prefix, args.student_scores, args.teacher_scores,
            args.data_top, args.temperature, args.loss_weight, args.activation, args.axis,
            student_weights=student_weights or None, **state_options(args))
    except PrototxtError as exc:
        return refuse("distill", exc)
    notes_out("distill", notes + more)
    prototxt.write_bytes(weights.SerializeToString(), weights_out, "--weights-out")
    prototxt.write_text(prototxt.net_text(net), args.output)
    loss = [l for l in net.layer if l.python_param.layer == "DistillationLoss"][-1]
    print("wrote %s (%d teacher layers beside the student's, %s %r: %s, loss_weight %g) and %s "
          "(the teacher's weights of %d layers)" % (
              args.output, sum(l.name.startswith(args.prefix) for l in net.layer), loss.python_param.layer,
              loss.name, loss.python_param.param_str, loss.loss_weight[0], weights_out, len(weights.layer)))
    print("train: caffe train -solver SOLVER -weights %s   (its net: %s)" % (weights_out, args.output))
    return 0


def parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_shape(parser, text):
    """``[NAME=]D1,D2,...`` as ``(name or None, [dims])``."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = [int(d) for d in dims.split(",")]
    except ValueError:
        parser.error("--input-shape takes [NAME=]N,C,H,W (integers), got %r" % text)
    return (name if sep else None), shape


def check_output(path, option="-o"):
    """PrototxtError naming an ``-o`` that cannot be written, before any work."""
    problem = path and prototxt.output_problem(path, option)
    if problem:
        raise PrototxtError(problem)


def write(text, path):
    if path:
        prototxt.write_text(text, path)
    else:
        sys.stdout.write(text)


def class_weights_main(argv=None, prog="python3 -m caffe_losses.class_weights"):
    """The class-weights command: counts and the line to paste; exit code 0, or 2 on an error."""
    from . import class_weights
    parser = argparse.ArgumentParser(prog=prog, description=class_weights.__doc__.split("\n")[0])
    parser.add_argument("labels", metavar="LABELS.h5",
                        help="an HDF5 file, or a text file listing HDF5 files (HDF5Data's source)")
    parser.add_argument("--dataset", default="label", help="the N x C 0/1 labels (default: label)")
    parser.add_argument("--beta", type=float, default=0.999,
                        help="class_weight: beta of the effective number, in [0, 1) (default: 0.999)")
    parser.add_argument("--kind", dest="key", choices=class_weights.KEYS, default="class_weight",
                        help="class_weight: effective number (Cui et al. 2019), summing to C; "
                             "pos_weight: negatives / positives (PyTorch)")
    args = parser.parse_args(argv)
    if not 0 <= args.beta < 1:
        parser.error("--beta must be in [0, 1), got %r" % args.beta)
    try:
        result = class_weights.from_file(args.labels, args.dataset, args.key, args.beta)
    except PrototxtError as exc:
        sys.stderr.write("%s: %s\n" % (prog, exc))
        return 2
    print("%s: dataset %r, %d samples, %d classes%s" % (
        args.labels, args.dataset, result.samples, len(result.positives),
        ", beta %g" % args.beta if args.key == "class_weight" else ""))
    print("%5s %10s %10s %10s" % ("class", "positives", "negatives", args.key))
    for c, (n, w) in enumerate(zip(result.positives, result.weights)):
        print("%5d %10d %10d %10.6g" % (c, n, result.samples - n, w))
    if result.all_positive:
        sys.stderr.write("%s: note: class %s: every sample is positive, so its pos_weight is 0 (its "
                         "positive term counts for nothing)\n" % (prog, ", ".join(map(str, result.all_positive))))
    print("'%s': %s" % (args.key, class_weights.number_list(result.weights)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
