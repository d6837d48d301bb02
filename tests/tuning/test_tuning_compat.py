"""Every private KerasTuner name the search relies on still exists on the installed KerasTuner."""

import keras_tuner
import pytest

from keras_resnet.tuning import ResNetHyperModel, SearchSpace, kt_compat, make_tuner


@pytest.fixture(scope="module")
def tuner(tmp_path_factory):
    hypermodel = ResNetHyperModel(SearchSpace(depths=(8,), width_min=0.25, width_max=0.25))
    return make_tuner(hypermodel, tuner="random", directory=str(tmp_path_factory.mktemp("compat")),
                      search_name="compat", verbose=0)


@pytest.mark.parametrize("where, name, why", kt_compat.PRIVATE_NAMES)
def test_private_keras_tuner_name_still_exists(where, name, why, tuner):
    missing = kt_compat.missing_names(tuner.oracle, tuner)
    assert f"{where}.{name}" not in missing, (
        f"keras_tuner {keras_tuner.__version__} has no {where}.{name}, which keras_resnet/tuning/kt_compat.py "
        f"relies on ({why}); adapt that module to this version")


def test_hyperparameter_kinds_are_keras_tuner_classes():
    hp = keras_tuner.HyperParameters()
    kinds = kt_compat.hyperparameter_kinds()
    hp.Fixed("f", 1), hp.Choice("c", [1, 2]), hp.Int("i", 1, 3), hp.Float("x", 0.1, 0.2)
    assert [type(p) for p in hp.space] == [kinds[name] for name in ("Fixed", "Choice", "Int", "Float")]


def test_missing_name_is_reported_with_its_owner():
    class Bare:
        pass

    missing = kt_compat.missing_names(Bare(), Bare())
    assert "Oracle._random_values" in missing and "Tuner._try_build" in missing
    assert not any(m.startswith("keras_tuner.engine") for m in missing)
