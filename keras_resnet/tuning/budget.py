"""What a search may spend (`Budget`) and the wall clock it shares between the tuner and the oracle."""

import dataclasses
import time

from keras_resnet.utils import checks
from keras_resnet.export.options import QUANTIZE_MODES
from keras_resnet.utils.flags import field


@dataclasses.dataclass
class Budget:
    """What a search may spend.

    Args:
        max_trials: trials in all (None: Hyperband's full iteration; required by the others).
        max_epochs: epochs per trial (Hyperband's largest, its rungs train fewer).
        time_limit: seconds of wall-clock time, counted from the tuner's creation in each process (a
            resumed search gets it afresh): then no new trial starts and the running one stops at its
            next batch, keeping what it measured so far.
        max_params: the most parameters a model may have; larger candidates are never trained.
        max_macs: the most multiply-accumulates per image; larger candidates are never trained.
        max_latency_ms: the most milliseconds per image of the deployed LiteRT file (the architecture
            converted in `latency_mode`, measured with `latency_threads` threads); slower candidates are
            never trained. See `keras_resnet.tuning.latency`.
        max_file_kb: the most KiB (1024 bytes) of that file; larger candidates are never trained.
        latency_mode: the export mode of the file that is measured and, at the end, deployed:
            "int8" (default), "float32", "float16" or "dynamic".
        latency_threads: LiteRT threads of the measurement.
        latency_command: measure elsewhere: a command with ``{tflite}`` (the file's path) and optionally
            ``{threads}``, which prints ``latency_ms: X`` or TFLite benchmark_model's average in
            microseconds (None: the LiteRT interpreter on this machine).
        latency_timeout: seconds that command may take for one file (`time_limit` bounds it when
            shorter); then it is stopped, with every process it started, and the search fails naming it.
    """

    max_trials: int = field(20, "trials in all; 0: no cap (Hyperband's full iteration)")
    max_epochs: int = field(10, "epochs per trial (Hyperband's largest)")
    time_limit: float = field(None, "seconds: no new trial after this, and the running one stops at its "
                                    "next batch", type=float, metavar="SECONDS")
    max_params: float = field(None, "larger models are never trained, e.g. 1e6", type=float)
    max_macs: float = field(None, "MACs per image, e.g. 50e6; larger models are never trained", type=float)
    max_latency_ms: float = field(None, "milliseconds per image of the deployed LiteRT file, measured before "
                                        "training; slower models are never trained", type=float)
    max_file_kb: float = field(None, "KiB of the deployed LiteRT file; larger models are never trained",
                               type=float)
    latency_mode: str = field("int8", "export mode of the file that is measured and deployed",
                              choices=QUANTIZE_MODES)
    latency_threads: int = field(1, "LiteRT threads of the latency measurement")
    latency_command: str = field(None, "measure with this command instead of on this machine, e.g. 'adb shell "
                                       "/data/local/tmp/benchmark_model --graph={tflite} --num_threads={threads}'"
                                       "; it prints 'latency_ms: X' or benchmark_model's average (us)", type=str)
    latency_timeout: float = field(600.0, "seconds the latency command may take for one file (bounded by "
                                          "--time-limit when that is shorter); then it is stopped and the "
                                          "search fails, naming it", metavar="SECONDS")

    def __post_init__(self):
        checks.check_int("max_trials", self.max_trials, 1, none_ok=True)
        checks.check_int("max_epochs", self.max_epochs, 1)
        checks.check_choice("latency_mode", self.latency_mode, QUANTIZE_MODES)
        checks.check_int("latency_threads", self.latency_threads, 1)
        if self.latency_command is not None and (not isinstance(self.latency_command, str)
                                                 or "{tflite}" not in self.latency_command):
            raise ValueError("`latency_command` must be a command line holding {tflite}, where the file's path "
                             f"goes. Received: latency_command={self.latency_command!r}")
        for name in ("time_limit", "max_params", "max_macs", "max_latency_ms", "max_file_kb"):
            value = getattr(self, name)
            if value is not None and not (checks.is_number(value) and 0 < value < float("inf")):
                raise ValueError(f"`{name}` must be a finite number > 0, or None for no limit. "
                                 f"Received: {name}={value!r}")
        checks.check_number("latency_timeout", self.latency_timeout, 0, low_open=True)

    @property
    def command_timeout(self):
        """Seconds a `latency_command` may take: `latency_timeout`, or `time_limit` when shorter."""
        return min(self.latency_timeout, self.time_limit or float("inf"))

    @property
    def limits_size(self):
        return self.max_params is not None or self.max_macs is not None

    @property
    def limits_deployment(self):
        """True when candidates are measured as deployed files (a latency or file-size limit)."""
        return self.max_latency_ms is not None or self.max_file_kb is not None

    @property
    def measures_deployment(self):
        """True when the deployed files are measured: under a latency or file-size limit, or a command."""
        return self.limits_deployment or self.latency_command is not None

    def deployment_problem(self, measured):
        """Why a file of ``{"latency_ms", "file_kb"}`` is over the limits, or None if it is within them."""
        how = f"{self.latency_mode}, {self.latency_threads} thread{'s' if self.latency_threads > 1 else ''}"
        if self.max_latency_ms is not None and measured["latency_ms"] > self.max_latency_ms:
            return f"{measured['latency_ms']:.3g} ms ({how}) > max_latency_ms={self.max_latency_ms:g}"
        if self.max_file_kb is not None and measured["file_kb"] > self.max_file_kb:
            return f"{measured['file_kb']:.1f} KiB ({self.latency_mode}) > max_file_kb={self.max_file_kb:g}"
        return None

    def size_problem(self, size):
        """Why a model of ``{"params", "macs"}`` is over the size limit, or None if it is within it."""
        if self.max_params is not None and size["params"] > self.max_params:
            return f"{size['params']:,} parameters > max_params={self.max_params:g}"
        if self.max_macs is not None and size["macs"] > self.max_macs:
            return f"{size['macs']:,} MACs > max_macs={self.max_macs:g}"
        return None


class Clock:
    """The wall-clock limit, shared by the tuner (stops the running trial) and the oracle (no new one)."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + seconds
        self.announced = False

    def expired(self):
        return self.end is not None and time.monotonic() >= self.end
