"""Measured deployment cost of an architecture: its LiteRT file's size and latency, cached on disk.

Before a candidate trains, its architecture (untrained weights) is converted with the project's own
exporter, `keras_resnet.export.to_tflite`, in the budget's mode (int8 calibrated on a few real
training images), and the file is timed. The default measurer runs it here with the LiteRT
interpreter: one image at a time, warm-up runs excluded, the median of at least `MIN_RUNS` runs and
`MIN_SECONDS` of timing. A `latency_command` measures it elsewhere instead (a phone over adb, a
board): the command is run with ``{tflite}`` replaced by the file's path (and ``{threads}`` by the
thread count), and its output is parsed (`parse_latency`).

Measurements are cached per architecture, mode, thread count and measurer in
``<search folder>/latency.json`` (written atomically), so a resumed search, another worker and the
final report reuse them.
"""

import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import tempfile
import threading
import time

import numpy as np

from keras_resnet.utils import io_utils
from keras_resnet.training.devices import cpu_info_field, precision_scope
from keras_resnet.tuning.space import build_kwargs, describe

CACHE_FILE = "latency.json"
WARMUP_RUNS = 20
MIN_RUNS = 100
MIN_SECONDS = 1.0
MAX_RUNS = 5000
NOTICE_AFTER = 5.0  # seconds of waiting for a `latency_command` before a line says so
CALIBRATION_IMAGES = 32  # training images that calibrate an untrained architecture's int8 file

# What a `latency_command` may print, checked in this order; the last match in the output counts.
_FORMATS = (
    (re.compile(r"latency_ms\s*[:=]\s*([0-9.eE+-]+)"), 1.0),  # a plain "latency_ms: 1.23" line
    (re.compile(r"Inference \(avg\):\s*([0-9.eE+-]+)"), 1e-3),  # benchmark_model's summary, microseconds
    (re.compile(r"Timings \(microseconds\):.*?\bavg=([0-9.eE+-]+)"), 1e-3),  # benchmark_model's timings
)


def parse_latency(output):
    """Milliseconds from a measuring command's output, or None if it holds no figure.

    Understood, in this order (the last such line counts): ``latency_ms: 1.23`` (milliseconds);
    TFLite ``benchmark_model``'s ``Inference (avg): 1234.5`` and ``Timings (microseconds): count=50
    ... avg=1234.5 ...`` (microseconds).
    """
    for pattern, to_ms in _FORMATS:
        found = pattern.findall(output)
        if found:
            try:
                return float(found[-1]) * to_ms
            except ValueError:
                continue
    return None


def run_latency_command(command, tflite_path, threads=1, timeout=600.0, log=None):
    """Runs `command` for one file and returns the milliseconds it printed.

    Args:
        command: the command line, with ``{tflite}`` (and optionally ``{threads}``).
        tflite_path: the file to measure; threads: the thread count.
        timeout: seconds the command may take; then it is killed (with every process it started).
        log: where the one line goes that says the command is still running after `NOTICE_AFTER` s.

    Raises:
        TimeoutError: it ran past `timeout`, named. ValueError: it failed or printed no figure, named
            with its last output line.
    """
    line = command.format(tflite=shlex.quote(str(tflite_path)), threads=threads)
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(line, shell=True, stdout=out, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)  # its own group: a timeout ends its children too
        try:
            process.wait(timeout=min(NOTICE_AFTER, timeout))
        except subprocess.TimeoutExpired:
            if timeout > NOTICE_AFTER:
                (log or _print)(f"waiting for `latency_command` {line!r} (up to {timeout:g} s: "
                                "--latency-timeout)")
        try:
            process.wait(timeout=max(timeout - NOTICE_AFTER, 0) if timeout > NOTICE_AFTER else 0.001)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise TimeoutError(f"`latency_command` {line!r} did not finish in {timeout:g} s and was stopped; "
                               "raise --latency-timeout (or --time-limit, which bounds it) if the device "
                               "needs longer") from None
        out.seek(0)
        output = out.read()
    lines = output.strip().splitlines()
    last = lines[-1] if lines else "(no output)"
    if process.returncode != 0:
        raise ValueError(f"`latency_command` {line!r} failed with exit status {process.returncode}; its last "
                         f"output line: {last!r}")
    ms = parse_latency(output)
    if ms is None or not ms > 0:
        raise ValueError(f"`latency_command` {line!r} printed no latency figure that can be parsed (a line "
                         f"'latency_ms: X', or benchmark_model's 'Inference (avg): X' or 'avg=X' in "
                         f"microseconds); its last output line: {last!r}")
    return ms


def _print(line):
    print(line, flush=True)


def _kill_group(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def time_tflite(path, threads=1):
    """``{"latency_ms", "p90_ms", "runs"}`` of single-image invokes of a ``.tflite`` file on this
    machine: median after `WARMUP_RUNS` warm-up runs, over at least `MIN_RUNS` runs and `MIN_SECONDS`."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], [1] + list(inp["shape"][1:]))
    interpreter.allocate_tensors()
    x = np.zeros([1] + list(inp["shape"][1:]), inp["dtype"])
    for _ in range(WARMUP_RUNS):
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
    times, start = [], time.perf_counter()
    while len(times) < MAX_RUNS and (len(times) < MIN_RUNS or time.perf_counter() - start < MIN_SECONDS):
        tick = time.perf_counter()
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        times.append(time.perf_counter() - tick)
    return {"latency_ms": 1000 * statistics.median(times),
            "p90_ms": 1000 * float(np.percentile(times, 90)), "runs": len(times)}


class LatencyMeter:
    """Measures (and caches) the deployed file of each architecture of a search.

    Args:
        hypermodel: the `ResNetHyperModel` whose models are measured.
        budget: the `Budget` (``latency_mode``, ``latency_threads``, ``latency_command``).
        folder: where ``latency.json`` lives (the search folder).
        calibration: normalised training images: int8 calibration and the conversion's check (None:
            seeded random images).
        export_kwargs: `to_tflite` arguments every file gets (``mean``, ``std``, ``class_names``), so the
            measured file is the one that will be deployed.
    """

    def __init__(self, hypermodel, budget, folder, calibration=None, export_kwargs=None):
        self.hypermodel, self.budget, self.folder = hypermodel, budget, os.fspath(folder)
        if calibration is None:
            shape = (CALIBRATION_IMAGES,) + tuple(hypermodel.input_shape)
            calibration = np.random.default_rng(0).standard_normal(shape).astype("float32")
        self.calibration = calibration[:CALIBRATION_IMAGES]
        self.export_kwargs = export_kwargs or {}
        self._lock = threading.Lock()
        self._cache = {}

    @property
    def path(self):
        return os.path.join(self.folder, CACHE_FILE)

    @property
    def measurer(self):
        command = self.budget.latency_command
        return f"command: {command}" if command else "LiteRT interpreter on this machine"

    def describe(self):
        """How latency is measured, for results.json."""
        return {"mode": self.budget.latency_mode, "threads": self.budget.latency_threads,
                "measurer": self.measurer, "cpu": cpu_info_field("model name"),
                "file_kb": "KiB (1024 bytes) of the .tflite file",
                "local_timing": None if self.budget.latency_command else {
                    "warmup_runs": WARMUP_RUNS, "min_runs": MIN_RUNS, "min_seconds": MIN_SECONDS,
                    "statistic": "median of single-image invokes"}}

    def key(self, values):
        spec = {"build": build_kwargs(values), "variant": self.hypermodel.variant,
                "input_shape": list(self.hypermodel.input_shape), "num_classes": self.hypermodel.num_classes,
                "mode": self.budget.latency_mode, "threads": self.budget.latency_threads,
                "measurer": self.measurer}
        return json.dumps(spec, sort_keys=True, default=list)

    def cached(self, values):
        """The cached measurement of `values`'s architecture (memory, then ``latency.json``), or None."""
        key = self.key(values)
        if key not in self._cache:
            self._cache.update((io_utils.read_json(self.path) or {}).get("measurements", {}))
        return self._cache.get(key)

    def measure(self, values):
        """``{"latency_ms", "file_kb", ...}`` of the deployed file of `values`'s architecture."""
        with self._lock:
            found = self.cached(values)
            if found is not None:
                return found
            with precision_scope("float32"):
                model = self.hypermodel.model(build_kwargs(values))
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, f"{model.name}.tflite")
                self.convert(model, path, self.calibration, verify=False)
                result = {**self.measure_file(path), "file_kb": round(os.path.getsize(path) / 1024, 2),
                          "architecture": describe(build_kwargs(values))}
            self._cache[self.key(values)] = result
            self.save()
            return result

    def convert(self, model, path, calibration, verify_data=None, verify_labels=None, verify=True):
        """`to_tflite` in the budget's mode; without `verify`, the numeric check is waived (an untrained
        model's near-uniform outputs flip under quantization)."""
        from keras_resnet import export

        checks = {} if verify else {"min_agreement": 0.0, "max_abs_diff": 1e3}
        options = export.ExportOptions(quantize=self.budget.latency_mode, **checks)
        return export.to_tflite(model, path, options, calibration,
                                verify_data=calibration[:CALIBRATION_IMAGES] if verify_data is None else verify_data,
                                verify_labels=verify_labels, **self.export_kwargs)

    def measure_file(self, path):
        """The latency of one file, with this meter's measurer and threads."""
        threads = self.budget.latency_threads
        if self.budget.latency_command:
            return {"latency_ms": run_latency_command(self.budget.latency_command, path, threads,
                                                      timeout=self.budget.command_timeout)}
        return time_tflite(path, threads)

    def save(self):
        """Merges this process's measurements into ``latency.json`` (others may have added theirs)."""
        on_disk = (io_utils.read_json(self.path) or {}).get("measurements", {})
        self._cache = {**on_disk, **self._cache}
        os.makedirs(self.folder, exist_ok=True)
        io_utils.write_json(self.path, {"measurements": self._cache})
