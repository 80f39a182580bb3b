"""MultiLabelImageData against Caffe's ImageData: images per second on the same JPEG list.

    tools/caffe-env python3 benchmarks/data_bench.py     (make bench runs it after bench.py)

Writes a list of JPEG files at run time (ImageNet-like: 500 x 375, quality 90, smooth
random content) to a temporary folder and builds, for each layer, a TRAIN net with the
same settings: resize to 256 x 256, random 227 x 227 crop, mirror, three mean values,
batch 32. Two measures:

* ``data only``: repeated ``net.forward()`` of a net holding only the data layer: how
  fast each layer delivers batches, the layer's own throughput;
* ``with a consumer``: the data layer feeding a small convolutional net (forward and
  backward): a training step, where the consumer's C++ layers hold Python's GIL (Caffe
  never releases it), so worker threads decode only while Python code runs.

Each time is taken in rounds that alternate the layers; in each round a layer first
runs off the batches it prefetched while the others ran (its queue), then times
``--batches`` forwards, then idles a second so that its refill does not run into the
next layer's time. Images per second are the median over rounds; CPU ms per image is
this process's CPU time per image over the same forwards. Writes
benchmarks/results/data_bench.{json,md}.

``--baseline DIR`` also times the layer of another commit in the same rounds, as more
rows: DIR holds that commit's ``caffe_losses`` renamed ``caffe_losses_baseline``
(docs/performance.md has the commands).
"""
import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

if "--blas-threads" in sys.argv[:-1]:  # OpenBLAS reads it once, when numpy below loads it
    os.environ["OPENBLAS_NUM_THREADS"] = sys.argv[sys.argv.index("--blas-threads") + 1]

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("GLOG_minloglevel", "2")

import caffe  # noqa: E402
import cv2  # noqa: E402

caffe.set_mode_cpu()

BATCH = 32
BASELINE = "caffe_losses_baseline"  # --baseline: the package of another commit, renamed
IMAGE = (375, 500)  # height, width
SETTINGS = dict(new_height=256, new_width=256, crop_size=227, mirror=True,
                mean_value=[104.0, 117.0, 123.0])
CONSUMER = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 16 kernel_size: 7 stride: 4 weight_filler { type: "msra" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 32 kernel_size: 3 stride: 2 weight_filler { type: "msra" } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "score" type: "InnerProduct" bottom: "conv2" top: "score"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "Reduction" bottom: "score" top: "loss" loss_weight: 1
  reduction_param { operation: SUMSQ coeff: 0.001 } }
layer { name: "silence" type: "Silence" bottom: "label" }
"""


def write_images(folder, count, seed=0):
    """``count`` JPEG files and a list with one label per line (valid for both layers)."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(count):
        small = rng.integers(0, 256, size=(IMAGE[0] // 16, IMAGE[1] // 16, 3), dtype=np.uint8)
        image = cv2.resize(small, (IMAGE[1], IMAGE[0]), interpolation=cv2.INTER_CUBIC)
        image = cv2.add(image, rng.integers(0, 24, size=image.shape, dtype=np.uint8))
        name = "%04d.jpg" % i
        cv2.imwrite(os.path.join(folder, name), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        lines.append("%s %d\n" % (name, i % 10))
    with open(os.path.join(folder, "list.txt"), "w") as f:
        f.writelines(lines)
    return os.path.join(folder, "list.txt")


def image_data(source, root):
    mean = "".join(" mean_value: %g" % m for m in SETTINGS["mean_value"])
    return ('layer { name: "data" type: "ImageData" top: "data" top: "%s"\n'
            '  transform_param { crop_size: %d mirror: true%s }\n'
            '  image_data_param { source: "%s" root_folder: "%s" batch_size: %d new_height: %d '
            'new_width: %d } }\n' % ("label", SETTINGS["crop_size"], mean, source, root, BATCH,
                                     SETTINGS["new_height"], SETTINGS["new_width"]))


def ours(source, root, workers, module="caffe_losses"):
    params = dict(SETTINGS, source=source, root_folder=root, batch_size=BATCH, num_classes=10,
                  seed=1, **workers)
    return ('layer { name: "data" type: "Python" top: "data" top: "label"\n'
            '  python_param { module: "%s" layer: "MultiLabelImageData" '
            'param_str: "%s" } }\n' % (module, repr(params)))


def build(text):
    fd, path = tempfile.mkstemp(suffix=".prototxt")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    try:
        return caffe.Net(path, caffe.TRAIN)
    finally:
        os.remove(path)


def nets(source, root, consumer, variants, baseline=False):
    layers = {"ImageData (C++, 1 thread)": image_data(source, root)}
    for module, label in [("caffe_losses", "")] + [(BASELINE, " (baseline)")] * baseline:
        for kind, counts in variants:
            for n in counts:
                name = "MultiLabelImageData%s, %d %s" % (
                    label, n, kind if n > 1 else kind[:-2 if kind == "processes" else -1])
                layers[name] = ours(source, root, {kind: n}, module)
    built = {}
    for name, text in layers.items():
        if consumer:
            text += CONSUMER  # the same for both: its loss reads the scores only
        built[name] = build(text)
    return built


def step(net, consumer):
    if consumer:
        def run():
            net.forward()
            net.backward()
    else:
        run = net.forward
    return run


def machine_busy_seconds():
    """CPU seconds every process on the machine has used (from /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_seconds():
    """CPU seconds of this process and its live child processes (the worker processes)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    seconds = usage.ru_utime + usage.ru_stime
    for name in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid():  # fields: state, ppid, ..., utime (12), stime (13)
            seconds += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def measure(built, consumer, batches, rounds, drain=8, settle=1.0):
    """Per layer: median images per second and CPU milliseconds per image over the rounds.

    After its timed batches a layer refills its prefetch queue in the background; the
    ``settle`` seconds let it finish before the next layer is timed."""
    rates, cpu = {name: [] for name in built}, {name: [] for name in built}
    for _ in range(rounds):
        for name, net in built.items():
            run = step(net, consumer)
            for _ in range(drain):
                run()
            start, start_cpu = time.perf_counter(), cpu_seconds()
            for _ in range(batches):
                run()
            rates[name].append(batches * BATCH / (time.perf_counter() - start))
            cpu[name].append((cpu_seconds() - start_cpu) * 1e3 / (batches * BATCH))
            time.sleep(settle)
    return ({name: float(np.median(r)) for name, r in rates.items()},
            {name: float(np.median(c)) for name, c in cpu.items()})


def fill_times(source, root, batches):
    """CPU milliseconds per batch of one worker's work (decode, transform, labels: the
    ``fill`` of a batch), this package's and the baseline's in this process, alternating."""
    import importlib
    fills = {}
    for module in ("caffe_losses", BASELINE):
        batches_class = importlib.import_module(module + ".data").ImageBatches
        made = batches_class(**dict(SETTINGS, source=source, root_folder=root, batch_size=BATCH,
                                    num_classes=10, seed=1, threads=1, train=True))
        fills[module] = getattr(made, "recipe", made).fill  # ff6f3a3 has no recipe
    shapes = made.shapes
    data, label = np.empty(shapes[0], np.float32), np.empty(shapes[1], np.float32)
    times = {module: [] for module in fills}
    for b in range(batches):
        for module, fill in (fills.items() if b % 2 else reversed(list(fills.items()))):
            start = time.process_time()
            fill(b, data, label)
            times[module].append((time.process_time() - start) * 1e3)
    return times


def print_fill_times(times):
    for module, values in times.items():
        print("%-22s %.2f ms per batch of %d (median; quartiles %.2f-%.2f)" % (
            module, np.median(values), BATCH, np.percentile(values, 25), np.percentile(values, 75)))
    ours, base = np.array(times["caffe_losses"]), np.array(times[BASELINE])
    print("caffe_losses / %s: %.3f (medians), %.3f (median of the batches' ratios)"
          % (BASELINE, np.median(ours) / np.median(base), np.median(ours / base)))


def markdown(results):
    m = results["machine"]
    lines = ["Images per second, TRAIN nets, batch %d of %dx%d JPEGs resized to %dx%d, random "
             "%d crop, mirror, mean values; median of %d rounds of %d batches (Caffe %s, OpenCV %s, "
             "numpy %s, Python %s, %d CPUs)." % (
                 BATCH, IMAGE[1], IMAGE[0], SETTINGS["new_width"], SETTINGS["new_height"],
                 SETTINGS["crop_size"], results["rounds"], results["batches"], m["caffe"],
                 m["opencv"], m["numpy"], m["python"], m["cpus"]), ""]
    lines.append("| layer | data only: images/s | ratio | CPU ms/image | with a consumer: images/s "
                 "| ratio | CPU ms/image |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = "ImageData (C++, 1 thread)"
    for name in results["data only"]:
        row = [name]
        for mode in ("data only", "with a consumer"):
            rates = results.get(mode)
            if rates:
                row += ["%.0f" % rates[name], "%.2f" % (rates[name] / rates[base]),
                        "%.2f" % results[mode + " cpu ms"][name]]
            else:
                row += ["—", "—", "—"]
        lines.append("| %s |" % " | ".join(row))
    lines += ["", "CPU ms/image: user + system time per image while timing, of this process and "
              "its worker processes (the consumer's included in its columns). BLAS threads: %s. "
              "Other processes kept %s of the %d cores busy on average during the run (load "
              "average at the start: %s)."
              % (results["blas threads"], "%.2f" % results["other processes, cores busy"]
                 if "other processes, cores busy" in results else "an unknown number",
                 m["cpus"], results["load"])]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--images", type=int, default=256, help="JPEG files in the list")
    parser.add_argument("--batches", type=int, default=12, help="timed forwards per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", default="1,2", help="MultiLabelImageData process counts")
    parser.add_argument("--threads", default="2", help="MultiLabelImageData thread counts")
    parser.add_argument("--no-consumer", action="store_true", help="the data-only nets alone")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also time the layer of the package %s in DIR (another commit's "
                             "caffe_losses, renamed), in the same rounds" % BASELINE)
    parser.add_argument("--fill", type=int, metavar="BATCHES",
                        help="with --baseline: only time one worker's work per batch, this "
                             "package's and the baseline's, BATCHES each, alternating")
    parser.add_argument("--blas-threads", type=int, help="OpenBLAS threads of the consumer "
                        "(default: OpenBLAS's own, one per core); writes data_bench_blasN.*")
    args = parser.parse_args()
    if args.baseline:
        sys.path.insert(0, os.path.abspath(args.baseline))
    variants = [(kind, [int(n) for n in counts.split(",") if n])
                for kind, counts in (("processes", args.processes), ("threads", args.threads))]
    stem = "data_bench" if args.blas_threads is None else "data_bench_blas%d" % args.blas_threads
    results = {"machine": {"python": platform.python_version(), "numpy": np.__version__,
                           "caffe": caffe.__version__, "opencv": cv2.__version__,
                           "cpus": os.cpu_count()},
               "batch": BATCH, "image": list(IMAGE), "settings": SETTINGS,
               "batches": args.batches, "rounds": args.rounds,
               "load": " ".join("%.2f" % v for v in os.getloadavg()),
               "blas threads": os.environ.get("OPENBLAS_NUM_THREADS", "OpenBLAS's default")}
    start, start_cpu, start_busy = time.perf_counter(), cpu_seconds(), machine_busy_seconds()
    with tempfile.TemporaryDirectory() as folder:
        source = write_images(folder, args.images)
        if args.fill and args.baseline:
            print_fill_times(fill_times(source, folder + "/", args.fill))
            return
        for mode, consumer in (("data only", False), ("with a consumer", True)):
            if consumer and args.no_consumer:
                continue
            built = nets(source, folder + "/", consumer, variants, baseline=bool(args.baseline))
            results[mode], results[mode + " cpu ms"] = measure(built, consumer, args.batches,
                                                               args.rounds)
            for name, rate in results[mode].items():
                print("%-16s %-32s %7.0f images/s  %5.2f CPU ms per image" % (
                    mode, name, rate, results[mode + " cpu ms"][name]), flush=True)
            del built
    if start_busy is not None:
        # what other processes took of the machine while this ran: the ratios hold for this load
        others = (machine_busy_seconds() - start_busy - (cpu_seconds() - start_cpu))
        results["other processes, cores busy"] = max(0.0, others / (time.perf_counter() - start))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, stem + ".json"), "w") as f:
        json.dump(results, f, indent=1)
    table = markdown(results)
    with open(os.path.join(args.out, stem + ".md"), "w") as f:
        f.write(table)
    print()
    print(table)
    print("wrote %s/%s.{json,md}" % (args.out, stem))


if __name__ == "__main__":
    main()
