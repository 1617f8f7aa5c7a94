"""The repository stands alone: a clone without anything beside it passes ``make test``.

No project file may read or name the build machine's shared folder (the reference notes and
the CDI schema a developer may have next to the checkout): the schema is vendored into
``dra_driver/cdi/schema/``, and docstrings cite upstream sources, not local copies of notes.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO_ROOT

#: What the repository must never contain, built from pieces so this file does not match
#: itself: the build machine's work tree, the sibling shared folder by relative path, its
#: subdirectories, and a path join onto a directory called "shared".
FORBIDDEN = re.compile(
    "|".join(
        (
            "/" + "work/",
            r"\.\./" + "shared",
            "shared/" + "(schemas|reference|hooks)",
            r"""["']""" + "shared" + r"""["']\s*/""",
        )
    )
)


#: The project's own files: everything but build outputs, the venv and caches.
PROJECT_PARTS = ("dra_driver", "tests", "bench", "proto", "kind", "deploy", "cdi", ".ci")
PROJECT_FILES = ("Makefile", "pyproject.toml", "README.md", ".gitignore", ".dockerignore")
SKIPPED_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})


def project_files() -> list[Path]:
    """Every file of the project's sources, tests and documents."""
    found = [REPO_ROOT / name for name in PROJECT_FILES]
    for part in PROJECT_PARTS:
        found.extend(
            path
            for path in (REPO_ROOT / part).rglob("*")
            if path.is_file() and not SKIPPED_DIRS & set(path.parts)
        )
    return sorted(path for path in found if path.is_file())


def test_nothing_in_the_repository_reads_or_names_the_shared_folder_beside_it() -> None:
    hits: list[str] = []
    for path in project_files():
        name = path.relative_to(REPO_ROOT).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary: nothing to read
        hits.extend(
            f"{name}:{number}: {line.strip()}"
            for number, line in enumerate(text.splitlines(), start=1)
            if FORBIDDEN.search(line)
        )
    assert hits == []
