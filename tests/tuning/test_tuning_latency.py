"""The search for the device: measured latency and file-size limits, the cache, the measuring command,
and the deployable int8 file."""

import json
import os
import re
import sys
import time

import keras_tuner
import numpy as np
import pytest
from conftest import kill_when

from keras_resnet import export, training, tuning
from keras_resnet.tuning import Budget, ResNetHyperModel, SearchSpace
from keras_resnet.tuning.latency import CACHE_FILE, LatencyMeter, parse_latency, run_latency_command

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", "KERAS_BACKEND": "tensorflow"}
TINY = dict(depths=(8, 14), width_min=0.25, width_max=0.5, width_step=0.25)  # 4 architectures
# A stand-in for a device benchmark: latency_ms = KiB of the file / 100, and one log line a call.
FAKE = """import os, sys
kib = os.path.getsize(sys.argv[1]) / 1024
with open(sys.argv[2], "a") as log:
    log.write(f"{kib:.2f}\\n")
print("benchmark of", sys.argv[1])
print(f"latency_ms: {kib / 100:.5f}")
"""


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fake")
    (folder / "measure.py").write_text(FAKE)
    return f"{sys.executable} {folder / 'measure.py'} {{tflite}} {folder / 'calls.log'}", folder / "calls.log"


def _calls(log):
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture(scope="module")
def measured(fake, tmp_path_factory):
    """Every architecture of the tiny space measured once by the fake command (float32 files)."""
    command, log = fake
    folder = tmp_path_factory.mktemp("searches")
    hypermodel = ResNetHyperModel(SearchSpace(**TINY), steps_per_epoch=10)
    budget = Budget(latency_mode="float32", latency_command=command)
    meter = LatencyMeter(hypermodel, budget, folder / "device")
    latency = {(v["depth"], v["width"]): meter.measure(v)["latency_ms"]
               for v in hypermodel.architectures(widths="all")}
    return folder, latency


@pytest.mark.slow
def test_fake_command_drives_the_constraint_and_slow_models_are_never_trained(fake, measured, monkeypatch):
    command, log = fake
    folder, latency = measured
    assert len(latency) == 4 and len(_calls(log)) == 4
    limit = sorted(latency.values())[1]  # the two fastest fit
    budget = Budget(max_trials=5, max_epochs=1, max_latency_ms=limit, latency_mode="float32",
                    latency_command=command)
    tuner = tuning.make_tuner(ResNetHyperModel(SearchSpace(**TINY), steps_per_epoch=10), budget, tuner="random",
                              directory=str(folder), search_name="device", verbose=0)
    proposed = {(v["depth"], v["width"]) for v in
                (tuner.oracle.populate_space(str(i))["values"] for i in range(30))}
    assert proposed == {a for a, ms in latency.items() if ms <= limit}
    assert {(a["depth"], a["width"]) for a in tuner.skipped} == {a for a, ms in latency.items() if ms > limit}
    assert len(_calls(log)) == 4, "every measurement came from the cache"

    fits = []
    monkeypatch.setattr(ResNetHyperModel, "fit", lambda self, hp, model, *a, **k: fits.append(model.name))
    slowest = max(latency, key=latency.get)
    trial = keras_tuner.engine.trial.Trial(tuner.oracle.get_space(), trial_id="9")
    trial.hyperparameters.values.update(depth=slowest[0], width=slowest[1])
    with pytest.raises(keras_tuner.errors.FailedTrialError, match=f"> max_latency_ms={limit:g}"):
        tuner.run_trial(trial, None, epochs=1)
    assert fits == []


@pytest.mark.slow
def test_budget_no_architecture_meets_names_the_fastest(fake, measured):
    command, _ = fake
    folder, latency = measured
    budget = Budget(max_latency_ms=1e-6, latency_mode="float32", latency_command=command)
    fastest = min(latency, key=latency.get)
    with pytest.raises(ValueError, match=rf"the fastest, depth={fastest[0]} width={fastest[1]:g}, takes "
                                         rf"{latency[fastest]:.3g} ms"):
        tuning.make_tuner(ResNetHyperModel(SearchSpace(**TINY)), budget, directory=str(folder),
                          search_name="device", verbose=0)


@pytest.mark.parametrize("output, ms", [
    ("loading\nlatency_ms: 1.25\n", 1.25),
    ("Inference timings in us: Init: 2000, First inference: 900, Warmup (avg): 450.5, "
     "Inference (avg): 412.5\n", 0.4125),
    ("Timings (microseconds): count=50 first=900 curr=420 min=400 max=900 avg=450 std=20\n"
     "Timings (microseconds): count=200 first=410 curr=400 min=390 max=500 avg=410.5 std=9\n", 0.4105),
    ("no figure here\n", None),
])
def test_latency_output_formats_are_parsed(output, ms):
    assert parse_latency(output) == (None if ms is None else pytest.approx(ms))


@pytest.mark.parametrize("script, match", [
    ("print('model loaded'); print('done')", r"printed no latency figure.*last output line: 'done'"),
    ("import sys; print('error: no device attached'); sys.exit(3)",
     r"failed with exit status 3; its last output line: 'error: no device attached'"),
])
def test_unparsable_or_failing_command_names_it_and_its_last_line(script, match, tmp_path):
    command = f'{sys.executable} -c "{script}" {{tflite}}'
    with pytest.raises(ValueError, match=match) as error:
        run_latency_command(command, tmp_path / "m.tflite")
    assert sys.executable in str(error.value)


@pytest.mark.slow
def test_a_command_that_never_returns_is_stopped_at_the_timeout_after_one_waiting_line(tmp_path, monkeypatch):
    from keras_resnet.tuning import latency

    monkeypatch.setattr(latency, "NOTICE_AFTER", 0.2)
    marker = tmp_path / "child-ran-on"
    command = f"sleep 1.5 && touch {marker} && echo latency_ms: 1 # {{tflite}}"
    lines = []
    began = time.monotonic()
    with pytest.raises(TimeoutError, match=r"`latency_command` 'sleep 1\.5 .* did not finish in 0\.6 s and was "
                                           r"stopped; raise --latency-timeout"):
        run_latency_command(command, tmp_path / "m.tflite", timeout=0.6, log=lines.append)
    assert time.monotonic() - began < 1.4
    assert len(lines) == 1 and lines[0].startswith("waiting for `latency_command` 'sleep 1.5")
    time.sleep(1.5)
    assert not marker.exists(), "the command's own children must be stopped with it"


def test_the_latency_timeout_is_bounded_by_a_shorter_time_limit():
    assert Budget(latency_command="m {tflite}").command_timeout == 600
    assert Budget(latency_command="m {tflite}", latency_timeout=20, time_limit=5).command_timeout == 5
    assert Budget(latency_command="m {tflite}", latency_timeout=20, time_limit=50).command_timeout == 20
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="latency_timeout"):
            Budget(latency_timeout=bad)


def test_latency_command_without_placeholder_is_refused():
    with pytest.raises(ValueError, match="latency_command"):
        Budget(latency_command="benchmark_model --graph=model.tflite")


def _tune_command(folder, name, command):
    return [sys.executable, "-m", "keras_resnet.cli", "tune", "--tuner", "random", "--depths", "8",
            "--width-min", "0.25", "--width-max", "1.0", "--max-epochs", "1", "--train-size", "300",
            "--test-size", "500", "--batch-size", "32", "--retrain-epochs", "0", "--directory", str(folder),
            "--search-name", name,
            "--max-trials", "3", "--max-latency-ms", "1000", "--latency-mode", "float32",
            "--latency-command", command]


@pytest.mark.slow
def test_a_search_killed_with_sigkill_resumes_without_rerunning_finished_trials_or_measurements(tmp_path, capsys):
    """The search (three trials, latencies measured by a command) is killed with SIGKILL in its second
    trial; the same command finishes it, reusing the finished trial and the cached measurements."""
    from test_tuning import _completed

    (tmp_path / "measure.py").write_text(FAKE)
    log = tmp_path / "calls.log"
    command = _tune_command(tmp_path, "kill", f"{sys.executable} {tmp_path / 'measure.py'} {{tflite}} {log}")
    cache = tmp_path / "kill" / CACHE_FILE
    kill_when(command, ENV, lambda: _completed(tmp_path / "kill") and len(_measurements(cache)) >= 2, timeout=900)
    before, finished = _measurements(cache), _completed(tmp_path / "kill")
    assert len(before) >= 2, "the first run should die after measuring two architectures"
    assert finished and len(finished) < 3, "the first run should die after its first trial, before its last"

    from keras_resnet import cli  # the same command again, in this process

    capsys.readouterr()
    assert cli.main(command[3:]) == 0
    ran_again = {m.group(1) for m in re.finditer(r"^trial (\d+) ", capsys.readouterr().out, re.M)}
    assert ran_again and not ran_again & set(finished)
    after_trials = _completed(tmp_path / "kill")
    assert len(after_trials) == 3 and all(after_trials[t] == mtime for t, mtime in finished.items())
    after = _measurements(cache)
    assert set(before) <= set(after)
    # Each architecture measured once across both runs, plus the deployed file at the end.
    assert len(_calls(log)) == len(after) + 1
    results = json.loads((tmp_path / "kill" / "results.json").read_text())
    deployed = results["best"]["deployed"]
    assert deployed["file"].endswith("best_float32.tflite") and os.path.exists(deployed["sidecar"])
    assert results["latency"]["measurer"].startswith("command:") and results["latency"]["mode"] == "float32"
    board = json.loads((tmp_path / "kill" / "leaderboard.json").read_text())["trials"]
    assert sorted(r["trial_id"] for r in board) == sorted(after_trials)
    assert all(r["latency_ms"] == pytest.approx(r["file_kb"] / 100, abs=1e-4) for r in board)


def _measurements(path):
    try:
        return json.loads(path.read_text())["measurements"]
    except (OSError, ValueError, KeyError):
        return {}


@pytest.mark.slow
def test_search_under_a_file_size_limit_deploys_a_verified_int8_file(tmp_path):
    results = tuning.run_search(
        SearchSpace(depths=(8,), width_min=0.5, width_max=0.5), Budget(max_trials=1, max_epochs=1, max_file_kb=500),
        training.Recipe(batch_size=32, seed=0), data=tuning.SearchData(train_size=640, test_size=2000),
        retrain=tuning.Retrain(retrain_epochs=4, retrain_size=8000),
        setup=tuning.SearchSetup(tuner="random", search_name="int8", directory=str(tmp_path)), verbose=0)
    best, deployed = results["best"], results["best"]["deployed"]
    assert "error" not in deployed, deployed.get("error")
    assert deployed["file"] == str(tmp_path / "int8" / "best_int8.tflite") and deployed["mode"] == "int8"
    assert export.read_sidecar(deployed["file"])["verification"]["images"] == 1000
    assert deployed["latency_ms"] > 0 and 0 < deployed["file_kb"] <= 500 and deployed["test_images"] == 2000
    assert abs(deployed["test_accuracy"] - best["test_accuracy"]) <= 0.02
    top = export.predict(deployed["file"], np.zeros((2, 28, 28, 1), np.uint8), top=1)
    assert len(top) == 2
    latency = results["latency"]
    assert latency["mode"] == "int8" and latency["threads"] == 1 and latency["cpu"]
    assert results["files"]["pareto_png"].endswith("pareto.png") and os.path.exists(results["files"]["pareto_macs_png"])
