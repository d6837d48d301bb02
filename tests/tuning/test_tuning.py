"""The depth x width search: space, budgets, results, resume after kill -9, chief + workers."""

import csv
import inspect
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import keras
import keras_tuner
import numpy as np
import pytest
from conftest import kill_when

import keras_resnet
from keras_resnet import data, training, tuning
from keras_resnet.tuning import Budget, ResNetHyperModel, SearchSpace

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", "KERAS_BACKEND": "tensorflow"}
TINY = dict(width_min=0.25, width_max=0.5, width_step=0.125)  # widths 0.25, 0.375, 0.5
BUILD_ARGS = set(inspect.signature(keras_resnet.build).parameters)
RECIPE_ARGS = {f.name for f in training.Recipe.__dataclass_fields__.values()}


def _hypermodel(space, **kwargs):
    return ResNetHyperModel(space, input_shape=(28, 28, 1), num_classes=10, steps_per_epoch=10, **kwargs)


@pytest.fixture(scope="module")
def tiny_data():
    (x, y), _, info = data.load("fashion_mnist")
    (x_tr, y_tr), (x_val, y_val) = data.split_validation(x[:320], y[:320], 0.2, seed=0)
    train = data.tf_dataset(x_tr, y_tr, info, batch_size=32, training=True)
    return train, data.tf_dataset(x_val, y_val, info, batch_size=64), len(x_tr) // 32


# --- the space ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", [
    SearchSpace(),
    SearchSpace(depths=(8, 18), learning_rate=(0.01, 0.2), weight_decay=(1e-5, 1e-3)),
    SearchSpace(blocks=[(1, 1, 1), (1, 2, 1)], block=["basic", "bottleneck"], width_min=0.25, width_max=0.5),
    SearchSpace(depths=(8,), shortcut=["projection", "avg_down"], attention=["none", "se"]),
])
def test_space_names_feed_back_into_build_and_recipe(space):
    hp = keras_tuner.HyperParameters()
    values = space.declare(hp)
    assert set(values) == set(hp.values) and set(values) <= BUILD_ARGS | RECIPE_ARGS
    for seed in range(3):  # random points of the space, as the oracle draws them
        point = {p.name: p.random_sample(seed) for p in hp.space}
        model = keras_resnet.build(**tuning.build_kwargs(point), input_shape=(28, 28, 1), num_classes=10)
        recipe = training.Recipe(**tuning.recipe_kwargs(point))
        assert model.output_shape == (None, 10)
        assert recipe.learning_rate == point.get("learning_rate", 0.1)


def test_default_space_leaves_the_shortcut_and_se_to_build():
    hp = keras_tuner.HyperParameters()
    assert not {"shortcut", "attention"} & set(SearchSpace().declare(hp))
    values = SearchSpace(depths=(8,), shortcut="avg_down", attention="se").declare(keras_tuner.HyperParameters())
    assert tuning.build_kwargs(values) == {"depth": 8, "width": 0.5, "shortcut": "avg_down", "attention": "se"}
    with pytest.raises(ValueError, match=r"`attention`.*attention=\['eca'\]"):
        SearchSpace(attention=["eca"])


def test_cifar_n_searches_the_6n_plus_2_depths():
    hp = keras_tuner.HyperParameters()
    SearchSpace(cifar_n=(1, 5)).declare(hp)
    depth = hp.space[0]
    assert isinstance(depth, keras_tuner.engine.hyperparameters.Int)
    assert sorted({depth.random_sample(s) for s in range(200)}) == [8, 14, 20, 26, 32]


def test_single_values_fix_entries_and_ranges_narrow_them():
    hp = keras_tuner.HyperParameters()
    space = SearchSpace(depths=[20], width_min=0.5, width_max=0.5, learning_rate=0.05,
                        weight_decay=(1e-5, 1e-3))
    space.declare(hp)
    kinds = {p.name: type(p).__name__ for p in hp.space}
    assert kinds == {"depth": "Fixed", "width": "Fixed", "learning_rate": "Fixed", "weight_decay": "Float"}
    assert hp.values["depth"] == 20 and hp.values["learning_rate"] == 0.05
    decay = hp.space[-1]
    assert decay.sampling == "log" and (decay.min_value, decay.max_value) == (1e-5, 1e-3)


def test_hp_fixed_overrides_the_space_and_reaches_the_recipe():
    hp = keras_tuner.HyperParameters()
    hp.Fixed("depth", 14)
    hp.Fixed("learning_rate", 0.05)
    hp.values["tuner/initial_epoch"], hp.values["tuner/epochs"] = 2, 5  # a Hyperband continuation
    model = _hypermodel(SearchSpace(depths=(8, 14), **TINY), epochs=9).build(hp)
    assert model.name == "resnet14_w0.25" and model.optimizer is not None
    assert int(model.optimizer.iterations.numpy()) == 2 * 10  # the schedule picks up at the initial epoch
    # Peak 0.05 (the fixed value, not the recipe's 0.1), 1 warm-up epoch (a fifth of the trial's 5), then
    # cosine decay over the other 4: at step 20 the decay is 10 of its 40 steps in.
    expected = 0.05 * (1 + math.cos(math.pi * 10 / 40)) / 2
    assert float(model.optimizer.learning_rate) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(width_min=2.0, width_max=0.5), "width_min"),
    (dict(depths=[]), "depths"),
    (dict(depths=[8, 9]), "unsupported depth 9"),
    (dict(cifar_n=(3, 1)), "cifar_n"),
    (dict(depths=[8], blocks=[(1, 1, 1)]), "not depths and blocks"),
    (dict(blocks=[(1, 1)]), "blocks"),
    (dict(depths=[8], block="bottleneck"), "block"),
    (dict(learning_rate=(0.1, 0.01)), "learning_rate"),
    (dict(width_step=0), "width_step"),
])
def test_inconsistent_space_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SearchSpace(**kwargs)


@pytest.mark.parametrize("make, match", [
    (lambda hm: tuning.make_tuner(hm, Budget(max_params=1000)), "smallest.*5,310 parameters"),
    (lambda hm: tuning.make_tuner(hm, Budget(max_macs=1e5)), "max_macs=100000"),
    (lambda hm: tuning.make_tuner(hm, tuner="grid"), "tuner='grid'"),
    (lambda hm: tuning.make_tuner(hm, Budget(max_trials=None), tuner="random"), "max_trials"),
    (lambda hm: Budget(max_epochs=0), "max_epochs=0"),
    (lambda hm: Budget(time_limit=-1), "time_limit=-1"),
])
def test_bad_budget_or_tuner_raises_value_error(make, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        make(_hypermodel(SearchSpace(depths=(8, 14), **TINY)))


@pytest.mark.parametrize("seconds, startup, epochs", [
    (1000, 0, 98),  # 0.1 s a step, 100 steps an epoch, 2% spare: 10.2 s an epoch
    (1000, 20, 96),  # the first step's tracing comes off the budget
    (5, 0, 1),  # less than an epoch still trains one
])
def test_retrain_time_budget_gives_the_whole_epochs_that_fit(seconds, startup, epochs):
    assert tuning.epochs_within(seconds, step_seconds=0.1, steps_per_epoch=100, startup_seconds=startup) == epochs


@pytest.mark.slow
def test_retrain_time_budget_plans_epochs_from_the_measured_speed(hyperband_search, tmp_path):
    folder, _ = hyperband_search
    shutil.copytree(folder, tmp_path / "hb")
    result = _tiny_search(tmp_path, tuning.Retrain(retrain_seconds=4, retrain_size=320))
    plan = json.loads((tmp_path / "hb" / "retrain" / "plan.json").read_text())
    assert plan["request"]["seconds"] == 4 and plan["measured_step_seconds"] > 0
    assert plan["epochs"] == tuning.epochs_within(4, plan["measured_step_seconds"], 320 // 32,
                                                  startup_seconds=plan["measured_first_step_seconds"])
    assert result["best"]["retrain_epochs"] == plan["epochs"]
    history = training.read_history(str(tmp_path / "hb" / "retrain" / "history.csv"))
    assert history["epoch"] == list(range(plan["epochs"]))


@pytest.mark.slow
@pytest.mark.parametrize("min_epochs", [1, 10**6])
def test_retrain_min_epochs_retrains_the_best_ranked_model_that_fits_them(min_epochs, hyperband_search,
                                                                          tmp_path):
    folder, _ = hyperband_search
    shutil.copytree(folder, tmp_path / "hb")
    result = _tiny_search(tmp_path, tuning.Retrain(retrain_seconds=4, retrain_min_epochs=min_epochs,
                                                   retrain_size=320))
    plan = json.loads((tmp_path / "hb" / "retrain" / "plan.json").read_text())
    board = json.loads((tmp_path / "hb" / "leaderboard.json").read_text())["trials"]
    ranked = [r["trial_id"] for r in board if r["val_accuracy"] is not None]
    architectures = {(r["depth"], r["width"]) for r in board if r["val_accuracy"] is not None}
    timed = [c["trial_id"] for c in plan["candidates"]]
    assert timed == sorted(timed, key=ranked.index)  # best-ranked first
    if min_epochs == 1:  # every model fits one epoch: the best-ranked one, and no other timed
        assert timed == [ranked[0]] and plan["trial_id"] == ranked[0]
    else:  # none fits: every distinct architecture (up to the cap) timed, the one with most epochs chosen
        assert len(timed) == min(len(architectures), tuning.RETRAIN_CANDIDATES)
        assert plan["epochs"] == max(c["epochs"] for c in plan["candidates"])
    best = result["best"]
    assert best["trial_id"] == plan["trial_id"] and best["rank"] == ranked.index(plan["trial_id"]) + 1
    assert best["retrain_epochs"] == plan["epochs"]
    assert training.read_history(str(tmp_path / "hb" / "retrain" / "history.csv"))["epoch"] == \
        list(range(plan["epochs"]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(retrain_seconds=0), "retrain_seconds=0"),
    (dict(retrain_seconds="1h"), "retrain_seconds='1h'"),
    (dict(retrain_seconds=60, retrain_epochs=0), "retrain_epochs=0"),
    (dict(retrain_seconds=60, retrain_min_epochs=0), "retrain_min_epochs=0"),
    (dict(retrain_min_epochs=30), "pass `retrain_seconds` too"),
])
def test_bad_retrain_budget_raises_value_error_before_any_work(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        tuning.run_search(retrain=tuning.Retrain(**kwargs), setup=tuning.SearchSetup(directory=str(tmp_path)))
    assert not list(tmp_path.iterdir())


# --- budgets -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_size_limit_rejects_big_models_without_training_them(tmp_path, monkeypatch, tiny_data):
    train, val, steps = tiny_data
    hypermodel = _hypermodel(SearchSpace(depths=(8, 14), **TINY))
    budget = Budget(max_trials=5, max_epochs=1, max_params=15000)
    tuner = tuning.make_tuner(hypermodel, budget, tuner="random", directory=str(tmp_path),
                              search_name="size", verbose=0)
    small = {(8, 0.25), (8, 0.375), (14, 0.25)}  # 5,310 / 11,536 / 11,582 parameters; the rest > 15,000
    proposed = {(v["depth"], v["width"]) for v in
                (tuner.oracle.populate_space(str(i))["values"] for i in range(30))}
    assert proposed == small
    assert {(a["depth"], a["width"]) for a in tuner.skipped} == {(8, 0.5), (14, 0.375), (14, 0.5)}

    fits = []
    monkeypatch.setattr(ResNetHyperModel, "fit", lambda self, hp, model, *a, **k: fits.append(model.name))
    big = keras_tuner.engine.trial.Trial(tuner.oracle.get_space(), trial_id="9")
    big.hyperparameters.values.update(depth=14, width=0.5)
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="44,786 parameters > max_params=15000"):
        tuner.run_trial(big, train, validation_data=val, epochs=1)
    assert fits == []


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(tuning.TUNERS))
def test_every_tuner_proposes_only_models_within_the_size_limit(kind, tmp_path, monkeypatch):
    tuner = tuning.make_tuner(_hypermodel(SearchSpace(depths=(8, 14), **TINY)),
                              Budget(max_trials=6, max_epochs=3, max_params=15000), tuner=kind,
                              directory=str(tmp_path), search_name=kind, verbose=0)
    small = {(8, 0.25), (8, 0.375), (14, 0.25)}
    responses = [tuner.oracle.populate_space(str(i)) for i in range(3)]  # Hyperband's first rung: 3
    assert all(r["values"] for r in responses)
    assert {(r["values"]["depth"], r["values"]["width"]) for r in responses} <= small
    # A model-based proposal over the limit (Bayesian optimisation's, say) gives way to one within it.
    base = next(c for c in type(tuner.oracle).__mro__ if c.__module__.startswith("keras_tuner"))
    monkeypatch.setattr(base, "populate_space", lambda self, trial_id: {
        "status": "RUNNING", "values": {"depth": 14, "width": 0.5, "tuner/epochs": 3}})
    values = tuner.oracle.populate_space("7")["values"]
    assert (values["depth"], values["width"]) in small and values["tuner/epochs"] == 3


@pytest.mark.slow
def test_time_limit_ends_the_running_trial_and_starts_no_new_one(tmp_path, tiny_data):
    train, val, steps = tiny_data
    hypermodel = _hypermodel(SearchSpace(depths=(8,), **TINY), epochs=30)
    budget = Budget(max_trials=3, max_epochs=30, time_limit=3600)
    tuner = tuning.make_tuner(hypermodel, budget, tuner="random", directory=str(tmp_path),
                              search_name="clock", verbose=0)

    def time_is_up_after_the_second_epoch(epoch, logs):
        if epoch == 1:
            tuner.clock.end = time.monotonic()

    callback = keras.callbacks.LambdaCallback(on_epoch_end=time_is_up_after_the_second_epoch)
    tuner.search(train, validation_data=val, epochs=30, callbacks=[callback], shuffle=False, verbose=0)
    (row,) = tuning.leaderboard(tuner)
    assert row["status"] == "COMPLETED" and row["note"] == "stopped by the time limit"
    assert row["epochs"] == 3  # stopped at the first batch of the third epoch, out of 30
    assert 0.0 <= row["val_accuracy"] <= 1.0


def test_pareto_front_keeps_the_trials_nothing_beats():
    rows = [{"trial_id": t, "macs": m, "val_accuracy": a} for t, m, a in
            [("a", 1, 0.5), ("b", 2, 0.7), ("c", 3, 0.6), ("d", 4, 0.9), ("e", 4, 0.8), ("f", 1, None)]]
    assert tuning.pareto_front(rows) == ["a", "b", "d"]


# --- a whole search ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hyperband_search(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search")
    result = _tiny_search(folder, tuning.Retrain(retrain_epochs=1, retrain_size=320))
    return folder / "hb", result


def _tiny_search(directory, retrain, **budget):
    """Hyperband over depths 8/14 at widths 0.25-0.5 (the ones under 15,000 parameters), 320 images;
    the retrained best model is tested on 1,000."""
    hp = keras_tuner.HyperParameters()
    hp.Fixed("learning_rate", 0.05)
    return tuning.run_search(
        SearchSpace(depths=(8, 14), **TINY), Budget(**{"max_trials": 4, "max_epochs": 3, "max_params": 15000,
                                                        **budget}),
        training.Recipe(batch_size=32, seed=3), data=tuning.SearchData(train_size=320, test_size=1000),
        retrain=retrain,
        setup=tuning.SearchSetup(search_name="hb", directory=str(directory)), hyperparameters=hp, verbose=0)


@pytest.mark.slow
def test_search_writes_leaderboard_plot_and_best_model(hyperband_search):
    folder, result = hyperband_search
    with open(folder / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == tuning.COLUMNS and len(rows) == 4
    board = json.loads((folder / "leaderboard.json").read_text())
    assert [r["trial_id"] for r in board["trials"]] == [r["trial_id"] for r in rows]
    assert board["pareto_front"] and set(board["pareto_front"]) <= {r["trial_id"] for r in rows}
    assert (folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = result["best"]
    assert best["trial_id"] == rows[0]["trial_id"] and best["val_accuracy"] == max(
        r["val_accuracy"] for r in board["trials"])
    assert best["test_images"] == 1000 and 0.0 <= best["test_accuracy"] <= 1.0  # SearchData's test_size
    assert 0.0 <= best["test_accuracy_flip_tta"] <= 1.0  # Fashion-MNIST trains with flips
    model = keras.saving.load_model(folder / "best.keras", safe_mode=True)
    assert model.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0).shape == (2, 10)
    assert keras_resnet.config_of(model) == {k: tuple(v) if isinstance(v, list) else v
                                             for k, v in best["architecture"].items()}
    rebuilt = keras_resnet.build(**best["build_kwargs"], input_shape=(28, 28, 1), num_classes=10)
    assert rebuilt.count_params() == model.count_params() == best["params"]
    assert json.loads((folder / "results.json").read_text())["best"]["test_accuracy"] == best["test_accuracy"]
    assert training.read_history(str(folder / "retrain" / "history.csv"))["epoch"] == [0]
    for name in ("curves.png", "confusion.png", "mistakes.png"):
        assert (folder / "retrain" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(folder.glob("*partial*"))


def _hparams_sessions(logdir):
    """Each HParams session under `logdir`, read with TensorBoard's own readers: its folder, trial id,
    hyperparameters and the scalars written into it."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    sessions = []
    for folder in sorted(logdir.glob("*/execution*")):
        events = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.TENSORS: 0})
        events.Reload()
        data = [plugin_data_pb2.HParamsPluginData.FromString(content)
                for content in events.PluginTagToContent("hparams").values()]
        (start,) = [d.session_start_info for d in data if d.HasField("session_start_info")]
        hparams = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
                   for name, value in start.hparams.items()}
        scalars = {tag: float(tensor_util.make_ndarray(events.Tensors(tag)[-1].tensor_proto))
                   for tag in events.Tags()["tensors"] if not tag.startswith("_hparams_")}
        sessions.append({"folder": folder, "trial_id": start.group_name, "hparams": hparams, "scalars": scalars})
    return sessions


@pytest.mark.slow
def test_every_trial_is_an_hparams_session_with_its_depth_width_and_objective(hyperband_search):
    folder, _ = hyperband_search
    board = json.loads((folder / "leaderboard.json").read_text())
    sessions = {s["trial_id"]: s for s in _hparams_sessions(folder / "tensorboard")}
    assert sorted(sessions) == sorted(r["trial_id"] for r in board["trials"])
    for row in board["trials"]:
        session = sessions[row["trial_id"]]
        assert session["folder"].parent.name == row["trial_id"]
        assert session["hparams"]["depth"] == row["depth"]
        assert session["hparams"]["width"] == pytest.approx(row["width"])
        assert session["scalars"]["val_accuracy"] == pytest.approx(row["val_accuracy"])
        assert session["scalars"]["params"] == row["params"] and session["scalars"]["macs"] == row["macs"]
        curves = _hparams_event_tags(session["folder"] / "validation")
        assert "epoch_accuracy" in curves  # per-epoch validation accuracy, from Keras's TensorBoard callback


def _hparams_event_tags(folder):
    from tensorboard.backend.event_processing import event_file_loader

    tags = set()
    for path in folder.glob("events.out.tfevents.*"):
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            tags.update(v.tag for v in event.summary.value)
    return tags


@pytest.mark.slow
def test_search_trains_only_models_within_the_size_limit(hyperband_search):
    folder, result = hyperband_search
    rows = json.loads((folder / "leaderboard.json").read_text())["trials"]
    assert all(r["status"] == "COMPLETED" and r["params"] <= 15000 for r in rows)
    assert result["skipped_for_size_this_run"] >= 1


@pytest.mark.slow
def test_hyperband_continues_the_best_trial_and_keeps_fixed_entries(hyperband_search):
    folder, _ = hyperband_search
    rows = {r["trial_id"]: r for r in json.loads((folder / "leaderboard.json").read_text())["trials"]}
    continued = [r for r in rows.values() if r["from_trial"] is not None]
    assert len(continued) == 1 and continued[0]["epochs"] == 3
    first = rows[continued[0]["from_trial"]]
    assert first["epochs"] == 1
    assert (first["depth"], first["width"]) == (continued[0]["depth"], continued[0]["width"])
    assert all(r["learning_rate"] == 0.05 for r in rows.values())


# --- processes ---------------------------------------------------------------------------------------


def _tune_command(folder, name, *extra):
    return [sys.executable, "-m", "keras_resnet.cli", "tune", "--tuner", "random", "--depths", "8",
            "--width-min", "0.25", "--width-max", "1.0", "--max-epochs", "1", "--train-size", "300",
            "--test-size", "500", "--batch-size", "32", "--retrain-epochs", "0", "--directory", str(folder),
            "--search-name", name,
            *extra]


def _completed(project):
    done = {}
    for path in project.glob("trial_*/trial.json"):
        state = json.loads(path.read_text())
        if state["status"] == "COMPLETED":
            done[state["trial_id"]] = path.stat().st_mtime_ns
    return done


@pytest.mark.slow
def test_retraining_killed_with_sigkill_with_its_newest_checkpoint_truncated_resumes_from_the_one_before(tmp_path):
    """The search is killed with SIGKILL after three of its four retraining epochs, and the newest
    epoch's weights are then cut to a third: the same command sets that checkpoint aside (naming it),
    resumes from the one before, and trains every epoch exactly once."""
    from keras_resnet.training import callbacks

    command = _tune_command(tmp_path, "retrain", "--max-trials", "1", "--retrain-epochs", "4",
                            "--retrain-size", "1200")
    run_dir = tmp_path / "retrain" / "retrain"
    history = run_dir / "history.csv"
    kill_when(command, ENV, lambda: len(_csv_epochs(history)) >= 3, timeout=900)
    assert len(_csv_epochs(history)) == 3, "the first run should die in the middle of the retraining"
    assert not (tmp_path / "retrain" / "best.keras").exists()
    newest = callbacks.RunState(str(run_dir)).committed()[0]
    weights = os.path.join(newest, callbacks.WEIGHTS_FILE)
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 3)

    from keras_resnet import cli  # the same command again, in this process

    with pytest.warns(UserWarning, match="could not be read") as warned:
        assert cli.main(command[3:]) == 0
    assert any(os.path.basename(newest) in str(w.message) for w in warned if "could not be read" in str(w.message))
    assert any(".unreadable-" in f for f in os.listdir(run_dir / "state"))
    assert _csv_epochs(history) == [0, 1, 2, 3], "every epoch is trained exactly once"
    best = json.loads((tmp_path / "retrain" / "results.json").read_text())["best"]
    assert best["retrain_epochs"] == 4 and 0.0 <= best["test_accuracy"] <= 1.0
    assert callbacks.readable_keras_file(tmp_path / "retrain" / "best.keras")


def _csv_epochs(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_chief_records_a_silent_workers_trial_as_failed_and_ignores_its_late_end(tmp_path):
    hypermodel = _hypermodel(SearchSpace(depths=(8,), **TINY))
    tuner = tuning.make_tuner(hypermodel, Budget(max_trials=3, max_epochs=1), tuner="random",
                              directory=str(tmp_path), search_name="s", verbose=0)
    oracle, started = tuner.oracle, time.monotonic()
    lost = oracle.create_trial("tuner1")
    kept = oracle.create_trial("tuner0")
    oracle.give_up_lost_workers(60, started)  # both were heard from just now
    assert set(oracle.ongoing_trials) == {"tuner0", "tuner1"}
    oracle._last_word["tuner1"] -= 61  # tuner1 silent for 61 s
    oracle.give_up_lost_workers(60, started)
    assert list(oracle.ongoing_trials) == ["tuner0"] and "tuner1" not in oracle.tuner_ids
    assert oracle.trials[lost.trial_id].status == "FAILED"
    assert oracle.trials[lost.trial_id].message.startswith("lost: worker tuner1 sent no word for 61 s")
    # The worker was only slow: its late result (a trial sent over the wire) is not counted.
    oracle.end_trial(keras_tuner.engine.trial.Trial(lost.hyperparameters.copy(), trial_id=lost.trial_id,
                                                    status="COMPLETED"))
    assert oracle.trials[lost.trial_id].status == "FAILED"
    assert kept.trial_id in {t.trial_id for t in oracle.ongoing_trials.values()}


def test_a_chief_that_hears_from_no_worker_stops_waiting(tmp_path):
    tuner = tuning.make_tuner(_hypermodel(SearchSpace(depths=(8,), **TINY)), Budget(max_trials=3, max_epochs=1),
                              tuner="random", directory=str(tmp_path), search_name="s", verbose=0)
    tuner.oracle.give_up_lost_workers(60, time.monotonic())  # just started: waits
    with pytest.raises(TimeoutError, match=r"no worker of the search has been heard from for 60 s \(--worker-timeout\)"):
        tuner.oracle.give_up_lost_workers(60, time.monotonic() - 61)


def _ongoing(state):
    """{worker: trial id} of the trials the chief has handed out and not yet seen end."""
    try:
        return json.loads(state.read_text()).get("ongoing_trials") or {}
    except (OSError, ValueError):
        return {}


@pytest.mark.slow
def test_chief_and_two_workers_share_the_trials_and_a_worker_killed_mid_trial_is_recorded_as_failed(tmp_path):
    """A chief and two workers share five trials; worker tuner1 is killed with SIGKILL in its second
    trial. Bound: the chief gives it up 10 s (--worker-timeout) after its last word, tuner0 runs the
    remaining trials, and the job ends within LOST_WORKER_BOUND seconds."""
    command = _tune_command(tmp_path, "lost", "--max-trials", "5", "--width-step", "0.125", "--worker-timeout", "10")
    oracle = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(_free_port())}
    processes = {
        name: subprocess.Popen(command, env={**ENV, **oracle, "KERASTUNER_TUNER_ID": name}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for name in ("chief", "tuner0", "tuner1")
    }
    state = tmp_path / "lost" / "oracle.json"
    try:
        deadline, first = time.monotonic() + 600, None
        while True:  # until tuner1 has finished one trial and begun the next
            assert time.monotonic() < deadline and all(p.poll() is None for p in processes.values())
            running = _ongoing(state).get("tuner1")
            first = first or running
            if running and running != first:
                break
            time.sleep(0.05)
        lost = running
        processes["tuner1"].send_signal(signal.SIGKILL)
        processes["tuner1"].wait()
        outputs = {name: processes[name].communicate(timeout=LOST_WORKER_BOUND)[0] for name in ("chief", "tuner0")}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    for name, out in outputs.items():
        assert processes[name].returncode == 0, f"{name}:\n{out[-3000:]}"
    assert f"trial {lost} lost: worker tuner1 sent no word" in outputs["chief"]
    assert "best: trial" in outputs["chief"]
    board = {r["trial_id"]: r for r in json.loads((tmp_path / "lost" / "leaderboard.json").read_text())["trials"]}
    assert len(board) == 5 and board[lost]["status"] == "FAILED" and board[lost]["val_accuracy"] is None
    assert "lost: worker tuner1" in board[lost]["note"]
    completed = sorted(t for t, r in board.items() if r["status"] == "COMPLETED")
    assert len(completed) == 4
    # Every completed trial was run once, by one worker, and both workers had trials.
    ran = [m.group(1) for m in re.finditer(r"^\[tuner0\] trial (\d+) ", outputs["tuner0"], re.M)]
    assert first in completed and first not in ran
    assert sorted(ran + [first]) == completed, (ran, first)
    assert len({r["width"] for r in board.values()}) == 5  # no configuration twice
    results = json.loads((tmp_path / "lost" / "results.json").read_text())
    assert results["trials"] == {"COMPLETED": 4, "FAILED": 1} and lost not in results["pareto_front"]


LOST_WORKER_BOUND = 600
