"""The examples a reader copies run: every ``>>>`` example of a docstring under doctest, and every
Python block of README.md and docs/*.md, in order, in a fresh folder.

A page's blocks share one namespace, as a reader running them one after another would. A block in
doctest form (``>>>`` lines) has its printed results checked; any other block must run without error.
A block whose first line is ``# not run: <reason>`` is skipped, and its reason must be one a test
machine cannot meet (the internet, a GPU, several machines or processes). Pages that train or search
are slow; the rest run in the fast tier.
"""

import doctest
import importlib
import io
import json
import pkgutil
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_resnet

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"# not run: (.+)")
REASONS = ("the internet", "GPU", "several processes", "several machines", "multi-process")
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# Modules and pages whose examples train, search or convert: the whole suite runs them.
SLOW = {"keras_resnet", "keras_resnet.export.convert", "README.md", "docs/training.md", "docs/search.md",
        "docs/export.md", "docs/pictures.md"}


def _modules_with_examples():
    names = ["keras_resnet"] + [m.name for m in pkgutil.walk_packages(keras_resnet.__path__, "keras_resnet.")]
    found = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec and spec.origin and ">>>" in Path(spec.origin).read_text():
            found.append(name)
    return found


MODULES = _modules_with_examples()


def _slow_if(name):
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


def _run_doctest(test):
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    runner.run(test, out=out.write, clear_globs=False)
    return runner, out.getvalue()


def test_examples_are_found_in_modules_and_pages():
    assert {"keras_resnet.models.resnet", "keras_resnet.models.layers", "keras_resnet.export.convert"} <= set(MODULES)
    assert sum(len(BLOCK.findall((ROOT / page).read_text())) for page in PAGES) >= 10


@pytest.mark.parametrize("name", [_slow_if(m) for m in MODULES])
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    globs = {"keras_resnet": keras_resnet, "keras": keras, "np": np, **vars(module)}
    tests = [t for t in doctest.DocTestFinder().find(module, name, globs=globs) if t.examples]
    assert tests, f"{name} has '>>>' in its source but no example was found"
    for test in tests:
        runner, report = _run_doctest(test)
        assert runner.failures == 0, report


@pytest.mark.parametrize("page", [_slow_if(p) for p in PAGES if BLOCK.search((ROOT / p).read_text())])
def test_page_python_blocks_run(page, tmp_path, monkeypatch, request):
    text = (ROOT / page).read_text()
    if '"model.keras"' in text:  # the page uses a run folder's model: one trained on Fashion-MNIST
        trained = request.getfixturevalue("fmnist_model")
        shutil.copy(trained.path, tmp_path / "model.keras")
        info = trained.data[-1]
        config = {"dataset": "fashion_mnist", "normalization": {"mean": info["mean"], "std": info["std"]},
                  "class_names": info["class_names"]}
        (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    for i, block in enumerate(BLOCK.findall(text)):
        skip = NOT_RUN.match(block.splitlines()[0])
        if skip:
            assert any(r in skip.group(1) for r in REASONS), f"{page} block {i}: {skip.group(1)!r}"
            continue
        if block.lstrip().startswith(">>>"):
            test = doctest.DocTestParser().get_doctest(block, namespace, f"{page}[{i}]", page, 0)
            runner, report = _run_doctest(test)
            assert runner.failures == 0, report
            namespace.update(test.globs)
        else:
            exec(compile(block, f"{page}[{i}]", "exec"), namespace)
