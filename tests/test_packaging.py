"""What a plain ``pip install promptrl`` (a wheel, no extras) needs: every module and data file of the
package in the wheel, and every third-party module the package imports when it loads declared as a dependency."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PROJECT["tool"]["setuptools"]


def _package_dir(package: str) -> Path:
    """The source folder of ``package``, as setuptools maps it (``package-dir``, else its dotted path)."""
    return ROOT / SETUPTOOLS.get("package-dir", {}).get(package, package.replace(".", "/"))


def _normalized(name: str) -> str:
    """A distribution name as PEP 503 compares names."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_wheel_ships_every_module():
    """Every folder of ``promptrl/`` that holds Python modules is a listed package: setuptools puts only
    the listed ones into the wheel, so a missing one breaks a plain install (e.g. ``promptrl --help``)."""
    listed = {_package_dir(p) for p in SETUPTOOLS["packages"]}
    folders = {p.parent for p in (ROOT / "promptrl").rglob("*.py") if "__pycache__" not in p.parts}
    assert folders <= listed, sorted(str(f.relative_to(ROOT)) for f in folders - listed)


def test_the_wheel_ships_every_data_file_of_every_package():
    """Each listed package's non-Python files (in its folder and in subfolders that are not packages
    of their own) must match one of its ``package-data`` globs, expanded as setuptools does."""
    packages = SETUPTOOLS["packages"]
    folders = {_package_dir(p) for p in packages}
    missing = []
    for package in packages:
        folder = _package_dir(package)
        covered = {p for pattern in SETUPTOOLS.get("package-data", {}).get(package, []) for p in folder.glob(pattern)}
        for path in folder.rglob("*"):
            inside_other = any(f != folder and f in path.parents and folder in f.parents for f in folders)
            if path.is_dir() or inside_other or path.suffix in {".py", ".pyc"} or "__pycache__" in path.parts:
                continue
            if path not in covered:
                missing.append(f"{package}: {path.relative_to(ROOT)}")
    assert not missing, missing


def _module_level_imports(tree: ast.Module) -> set[str]:
    """The top-level names of the absolute imports a module runs when it loads (its body, not functions)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_module_level_import_is_a_declared_dependency():
    """A third-party module imported when a promptrl module loads must come from a distribution in
    ``[project] dependencies``: an extra (``ray``, ``plots``, ...) or a dependency's dependency is not
    installed by a plain ``pip install promptrl``."""
    declared = {_normalized(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in PROJECT["project"]["dependencies"]}
    providers = importlib.metadata.packages_distributions()
    undeclared = []
    for path in sorted((ROOT / "promptrl").rglob("*.py")):
        for name in _module_level_imports(ast.parse(path.read_text())):
            if name == "promptrl" or name in sys.stdlib_module_names:
                continue
            dists = {_normalized(d) for d in providers.get(name, [name])}
            if not dists & declared:
                undeclared.append(f"{path.relative_to(ROOT)}: {name} (from {sorted(dists)})")
    assert not undeclared, undeclared
