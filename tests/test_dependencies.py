"""Every runtime dependency pyproject.toml declares is imported by the package, and only those.

A declared dependency nothing imports is dead weight in every image; an import of a third-party
package that is not declared works only by accident (something else installed it).

Optional extras count as declared (``status`` brings the kubernetes client for ``dcu-dra
status``), except ``dev``: it holds the tools for working on the project (pytest, ruff, ...),
which the package never imports, plus the other extras again.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

from tests.conftest import REPO_ROOT

PACKAGE_DIR = REPO_ROOT / "dra_driver"


def declared_distributions() -> set[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra, extra_specs in project.get("optional-dependencies", {}).items():
        if extra != DEV_EXTRA:
            specs.extend(extra_specs)
    return {_normalized(re.split(r"[<>=!~ ;\[]", spec, maxsplit=1)[0]) for spec in specs}


#: The extra of development tools: not imported by the package.
DEV_EXTRA = "dev"


def imported_top_level_modules() -> set[str]:
    """Top-level names of every module imported anywhere in the package (generated code too)."""
    found: set[str] = set()
    for path in PACKAGE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_declared_dependency_is_imported_and_every_import_is_declared() -> None:
    distributions = importlib.metadata.packages_distributions()
    third_party = {
        module
        for module in imported_top_level_modules()
        if module not in sys.stdlib_module_names and module not in ("dra_driver", "__future__")
    }
    imported = {_normalized(dist) for module in third_party for dist in distributions[module]}
    assert declared_distributions() == imported
