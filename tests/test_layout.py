"""The package's layout holds: no import cycles, no module using another's private names, and the
layers contract of `.importlinter` (also run by `make test` and `make test-fast`)."""

import ast
import pathlib
import shutil
import subprocess

import grimp
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "keras_resnet"


def _module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _strongly_connected(graph):
    """Tarjan's algorithm over the graph's modules: the components of more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def _dotted(node):
    """``a.b.c`` of a chain of names and attributes, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def _private_uses(name, path, modules):
    """``(line, what)`` for each private name of another keras_resnet module that `name` uses: a
    ``from M import _x``, or ``m._x`` where ``m`` is a module of the package however it was imported
    (``import keras_resnet``, ``from keras_resnet.data import streams as s``, ...). A private module
    of the same package (``pkg._helpers`` from ``pkg.module``) is its package's own."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    aliases, found = {}, []

    def private(attr, owner):
        if not attr.startswith("_") or attr.startswith("__"):
            return False
        return not (f"{owner}.{attr}" in modules and owner == package)

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_resnet"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in modules:
                    aliases[a.asname or a.name] = full
                if node.module != name and private(a.name, node.module):
                    found.append((node.lineno, f"from {node.module} import {a.name}"))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("keras_resnet"):
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
    for node in ast.walk(tree):
        chain = _dotted(node.value) if isinstance(node, ast.Attribute) else None
        if chain is None or chain.split(".")[0] not in aliases:
            continue
        head, _, rest = chain.partition(".")
        owner = aliases[head] + (f".{rest}" if rest else "")
        if owner in modules and owner != name and private(node.attr, owner):
            found.append((node.lineno, f"{chain}.{node.attr} ({owner})"))
    return found


def test_the_package_has_no_import_cycles_counting_imports_inside_functions():
    graph = grimp.build_graph("keras_resnet", include_external_packages=False)
    assert graph.direct_import_exists(importer="keras_resnet.training.run",
                                      imported="keras_resnet.weights.pretrained")  # one made inside a function
    assert _strongly_connected(graph) == []


def test_no_module_uses_another_modules_private_names():
    modules = _modules()
    found = {name: uses for name, path in modules.items() if (uses := _private_uses(name, path, modules))}
    assert found == {}


def test_the_private_name_check_finds_a_borrowed_name(tmp_path):
    path = tmp_path / "borrower.py"
    path.write_text("from keras_resnet.data import pipelines\n"
                    "from keras_resnet.data.common import _hidden\n"
                    "pipelines._secret(1)\n"
                    "import keras_resnet\n"
                    "keras_resnet._started(keras_resnet.data.streams._reader)\n")
    uses = _private_uses("keras_resnet.training.borrower", path, _modules())
    assert [line for line, _ in uses] == [2, 3, 5, 5]


def test_the_layers_contract_is_kept():
    lint = shutil.which("lint-imports") or pytest.fail("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([lint, "--config", str(ROOT / ".importlinter")], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout
