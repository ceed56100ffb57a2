"""Which repository files a module runs: its imports, followed transitively (for dvc.yaml deps).

Every ``import`` statement counts, at module level or inside a function (a
lazy import runs too, only later), and so does each package ``__init__`` on the
way to a module. Only the repository's own packages are followed.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("governance", "training", "privacy", "audits", "stores", "custodian")


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def _imported(name: str) -> set[str]:
    path = module_file(name)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # "from a import b": b may be a module or a name in a; both are tried.
            named |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    found = set()
    for dotted in named:
        parts = dotted.split(".")
        if parts[0] in PACKAGES:
            prefixes = (".".join(parts[:i]) for i in range(1, len(parts) + 1))
            found |= {prefix for prefix in prefixes if module_file(prefix) is not None}
    return found


def closure(module: str) -> set[Path]:
    """Every repository file ``module`` runs, relative to the repository root."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += _imported(name)
    return {module_file(name).relative_to(ROOT) for name in seen}
