"""What ``cnnctl models`` prints, without importing Keras: a table of every model's counts, shipped in
``model_catalog.json`` beside this file and checked against the source it was measured from.

Counting parameters and multiply-adds means building every architecture (20-30 s, plus
TensorFlow's 2 s import). The counts only change when a model's source changes, so they are measured
once (``python -m cnnctl.model_catalog``) and stored per *family module* (``cnnctl.models.resnet``,
...) with a fingerprint: the SHA-256 of that module's source and of every ``cnnctl`` module it
imports, directly or not (found by reading the ``import`` statements, so nothing is imported to
check it). A family whose fingerprint no longer matches is built again when listed, so a stale
table is slow, never wrong; ``tests/test_model_catalog.py`` fails until it is written again.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent                # .../cnnctl
CATALOG_PATH = PACKAGE_ROOT / "model_catalog.json"
REGENERATE = "python -m cnnctl.model_catalog"


def family_modules() -> list[str]:
    """The modules ``cnnctl/models/__init__.py`` imports to fill the registry (read, not imported)."""
    tree = ast.parse((PACKAGE_ROOT / "models" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "cnnctl.models":
            return [f"cnnctl.models.{a.name}" for a in node.names]
    raise RuntimeError("cnnctl/models/__init__.py no longer imports its family modules in one statement")


def _source_file(module: str) -> Path | None:
    """The file of a ``cnnctl.*`` module, or None for a name that is not a module (an imported function)."""
    rel = Path(*module.split(".")[1:])
    for candidate in (PACKAGE_ROOT / rel / "__init__.py", (PACKAGE_ROOT / rel).with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports_of(path: Path, seen: dict[Path, set[str]]) -> set[str]:
    """Every ``cnnctl`` module (or module attribute) named by an import anywhere in ``path``, lazy
    imports inside functions included: they can change what a builder builds. ``seen`` caches the
    answer per file for one listing (each file is parsed once, not once per family)."""
    if path not in seen:
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cnnctl":
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names if a.name.split(".")[0] == "cnnctl")
        seen[path] = names
    return seen[path]


def closure(module: str, seen: dict[Path, set[str]] | None = None) -> set[Path]:
    """The source files of ``module`` and of every ``cnnctl`` module it imports, directly or not."""
    seen = {} if seen is None else seen
    files: set[Path] = set()
    todo = [module]
    while todo:
        path = _source_file(todo.pop())
        if path is None or path in files:
            continue
        files.add(path)
        todo.extend(_imports_of(path, seen))
    return files


def fingerprint(module: str, seen: dict[Path, set[str]] | None = None) -> str:
    """SHA-256 over the sources of ``module`` and of its import closure within ``cnnctl``."""
    digest = hashlib.sha256()
    for path in sorted(closure(module, seen)):
        digest.update(str(path.relative_to(PACKAGE_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def stale_families(catalog: dict[str, Any]) -> list[str]:
    """Family modules whose stored counts were not measured from today's source."""
    stored = catalog.get("families", {})
    seen: dict[Path, set[str]] = {}
    return [m for m in family_modules()
            if m not in stored or stored[m].get("fingerprint") != fingerprint(m, seen)]


def read(path: Path | None = None) -> dict[str, Any]:
    try:
        return json.loads((path or CATALOG_PATH).read_text())
    except (OSError, ValueError):
        return {"families": {}}


def rows(path: Path | None = None) -> list[dict[str, Any]]:
    """Every model's row (name, task, params, macs, input_shape, paper, ...), sorted by name.

    Families whose fingerprint matches come from the table; the others are built now (this imports
    Keras and takes seconds), so the answer is always that of today's source.
    """
    catalog = read(path)
    return rows_of(catalog, stale_families(catalog))


def rows_of(catalog: dict[str, Any], stale: list[str]) -> list[dict[str, Any]]:
    """``rows`` with the stale families already found (the caller may want to prepare for a build)."""
    fresh = [m for m in family_modules() if m not in stale]
    out = [row for module in fresh for row in catalog["families"][module]["models"]]
    out += [row for module in sorted(stale) for row in measure_family(module)]
    return sorted(out, key=lambda r: r["name"])


def measure_family(module: str) -> list[dict[str, Any]]:
    """Build every model registered by ``module`` and count it (slow: imports Keras)."""
    from cnnctl import models as registry

    names = [e.name for e in registry.MODELS.entries() if e.fn.__module__ == module]
    return [_jsonable(registry.describe(n)) for n in names]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """A registry row as JSON data; hooks a family registers for its task (U-Net's ``output_side``) are
    code, not data, and are left out."""
    data = {k: v for k, v in row.items() if not callable(v)}
    return json.loads(json.dumps(data, default=lambda v: list(v) if isinstance(v, tuple) else str(v)))


def write(path: Path | None = None) -> dict[str, Any]:
    """Measure every family from today's source and write the table."""
    seen: dict[Path, set[str]] = {}
    catalog = {"regenerate_with": REGENERATE,
               "families": {m: {"fingerprint": fingerprint(m, seen), "models": measure_family(m)}
                            for m in family_modules()}}
    (path or CATALOG_PATH).write_text(json.dumps(catalog, indent=1, sort_keys=True) + "\n")
    return catalog


if __name__ == "__main__":
    from cnnctl.cli.common import quiet_tensorflow

    quiet_tensorflow()
    written = write()
    count = sum(len(f["models"]) for f in written["families"].values())
    print(f"wrote {count} models in {len(written['families'])} families to {CATALOG_PATH}", file=sys.stderr)
