"""The package's shape: imports point one way, modules stay small, the tree reads as a
table of contents and docs/architecture.md names every part of it."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fedbcs_lightning"

# Lower layers never import higher ones. Modules of one layer may import each other.
LAYERS = [
    ("core", ["registry", "catalog", "io", "rng", "rundir", "config"]),
    ("data", ["data"]),
    ("leaves", ["models", "evaluation.metrics", "reporting.visualize"]),
    ("methods", ["methods", "privacy"]),
    ("outputs", ["evaluation", "reporting"]),
    ("callbacks", ["callbacks"]),
    ("federation", ["federation"]),
    ("api", ["api"]),
    ("testing", ["testing"]),
    ("flower", ["flower"]),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def layer_of(module: str) -> int:
    """The layer of ``module`` (dotted, without the package name): its longest prefix."""
    best, rank = -1, None
    for k, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), k
    assert rank is not None, f"module {module!r} belongs to no layer; add it to LAYERS"
    return rank


def imports_of(path: Path) -> set[str]:
    """Every module imported anywhere in ``path``, function-level imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def library_modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def internal(imported: set[str]) -> set[str]:
    prefix = "fedbcs_lightning."
    return {m[len(prefix) :] for m in imported if m.startswith(prefix)}


def resolvable(name: str) -> bool:
    """A dotted name that is a module or package of the library (not an attribute)."""
    relative = PACKAGE.joinpath(*name.split("."))
    return relative.with_suffix(".py").is_file() or (relative / "__init__.py").is_file()


@pytest.mark.parametrize("path", library_modules(), ids=module_name)
def test_imports_point_down(path):
    name = module_name(path)
    own = layer_of(name) if name else 0  # the package's own __init__ re-exports core names
    imported = imports_of(path)
    assert not {m for m in imported if m.split(".")[0] == "fedbcs_cli"}, "imports the CLI"
    for target in filter(resolvable, internal(imported)):
        assert layer_of(target) <= own, (
            f"{module_name(path)} ({LAYERS[own][0]}) imports {target} "
            f"({LAYERS[layer_of(target)][0]}), a higher layer"
        )


@pytest.mark.parametrize(
    "path", [p for p in library_modules() if "methods" in p.parts], ids=module_name
)
def test_method_parts_never_import_the_loop_or_the_data(path):
    forbidden = ("data", "federation", "callbacks", "api")
    bad = [m for m in internal(imports_of(path)) if m.split(".")[0] in forbidden]
    assert not bad, f"{module_name(path)} imports {bad}"


def test_modules_stay_small_and_the_top_level_short():
    modules = [*library_modules(), *sorted((ROOT / "cli").glob("*.py"))]
    long = {
        str(p.relative_to(ROOT)): n for p in modules if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, f"modules over 400 lines: {long}"
    top = [p for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= 10, f"{len(top)} modules at the top level: {sorted(p.name for p in top)}"


@pytest.mark.parametrize("path", library_modules(), ids=module_name)
def test_every_module_says_what_it_is_for(path):
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring and docstring.strip(), f"{path.relative_to(ROOT)} has no docstring"


def test_tests_mirror_the_source_tree():
    for package in [p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]:
        if package.name == "presets":
            continue
        assert (ROOT / "tests" / package.name).is_dir(), f"no tests/{package.name}/"


def test_the_architecture_page_names_every_part_of_the_package():
    page = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"## Layout\n\n```text\n(.*?)```", page, flags=re.S).group(1)
    entries = [p for p in PACKAGE.iterdir() if p.name not in ("__init__.py", "__pycache__")]
    for entry in entries:
        if entry.suffix == ".py":
            assert re.search(rf"\b{entry.name}\b", block), (
                f"docs/architecture.md lacks {entry.name}"
            )
        elif (entry / "__init__.py").is_file():
            assert f"{entry.name}/" in block, f"docs/architecture.md lacks {entry.name}/"
            for module in entry.glob("*.py"):
                if module.name != "__init__.py":
                    assert re.search(rf"\b{module.stem}\b", block), (
                        f"docs/architecture.md lacks {entry.name}/{module.name}"
                    )


def test_the_wheel_lists_every_package():
    """pyproject's explicit package list (the CLI and presets live outside src/) must name
    every package, or an installed (non-editable) copy lacks modules."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        "fedbcs_lightning" + "".join(f".{part}" for part in p.parent.relative_to(PACKAGE).parts)
        for p in PACKAGE.rglob("__init__.py")
    }
    assert found <= listed, f"pyproject.toml does not list {sorted(found - listed)}"


def import_graph() -> dict[str, set[str]]:
    """Module -> the library modules it imports (anywhere in it, function level too),
    with the packages whose ``__init__`` an import runs."""
    modules = {module_name(p): p for p in library_modules()}

    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for target in map(owner, internal(imports_of(path))):
            parts = target.split(".")
            for k in range(1, len(parts) + 1):
                step = ".".join(parts[:k])
                if step in modules and step != name and not name.startswith(step + "."):
                    found.add(step)
        graph[name] = found
    return graph


def test_no_import_cycles():
    graph = import_graph()
    cycles, done = [], set()

    def walk(node: str, path: list[str]) -> None:
        for target in sorted(graph[node]):
            if target in path:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in done:
                walk(target, [*path, target])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            walk(start, [start])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_importing_the_library_changes_no_logging_level_or_warning_filter():
    """Quieting Lightning is done while a client trains, never at import."""
    import subprocess
    import sys

    modules = [f"fedbcs_lightning.{module_name(p)}" for p in library_modules() if module_name(p)]
    script = f"""
import logging, warnings
def state():
    names = ["", "lightning", "lightning.pytorch", "lightning.fabric", "torch"]
    return [logging.getLogger(n).level for n in names], list(warnings.filters)
import lightning, torch  # their own import-time settings are theirs
before = state()
import importlib
for name in {modules!r}:
    importlib.import_module(name)
after = state()
assert before == after, (before, after)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


#: What layers outside ``methods/`` may use of it: the contracts (base), building the
#: configured strategy (create) and the prototype bank the private release fills.
METHOD_SEAMS = ("methods", "methods.base", "methods.create", "methods.prototypes")


@pytest.mark.parametrize(
    "path", [p for p in library_modules() if "methods" not in p.parts], ids=module_name
)
def test_generic_layers_know_no_particular_method(path):
    used = {m for m in internal(imports_of(path)) if m.split(".")[0] == "methods"}
    particular = {m for m in used if resolvable(m) and m not in METHOD_SEAMS}
    assert not particular, f"{module_name(path)} imports {sorted(particular)}"
