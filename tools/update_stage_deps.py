"""Rewrite dvc.yaml's code deps from each stage module's import closure.

Run from the repository root after changing what a stage imports:
``.venv/bin/python tools/update_stage_deps.py``;
tests/custodian/test_stage_deps.py checks the result.
"""

import ast
import re
import sys

sys.path.insert(0, ".")
from pathlib import Path

from tests.custodian.imports import ROOT, closure


def docstring_only(f):
    body = ast.parse((ROOT / f).read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def deps(mod):
    files = {str(p) for p in closure(mod)}
    out = set(files)
    dirs = sorted({str(Path(f).parent) for f in files}, key=lambda d: d.count("/"))
    for d in dirs:
        allpy = {
            str(p.relative_to(ROOT))
            for p in (ROOT / d).rglob("*.py")
            if "__pycache__" not in p.parts
        }
        if (
            allpy
            and allpy <= files
            and d not in ("custodian", "custodian/services", "custodian/stages")
        ):
            out = {f for f in out if not f.startswith(d + "/")} | {d}
    out = {f for f in out if not any(f.startswith(o + "/") for o in out if o != f)}
    return sorted(x for x in out if not (x.endswith("__init__.py") and docstring_only(x)))


D = {
    s: deps(f"custodian.stages.{s}")
    for s in ["ingest", "validate", "split", "check", "train", "evaluate", "manifest", "report"]
}
s = Path("dvc.yaml").read_text(encoding="utf-8")
CODE = re.compile(r"^(governance|training|privacy|audits|stores|custodian)(/|$)")
stage_of = {"audit": "manifest"}
lines = s.split("\n")
out = []
i = 0
current = None
while i < len(lines):
    line = lines[i]
    m = re.match(r"^  (\w+):\s*$", line)
    if m:
        current = m.group(1)
    if line.strip() == "deps:" and current:
        out.append(line)
        i += 1
        kept = []
        while i < len(lines) and (
            lines[i].startswith("      - ") or lines[i].startswith("      #")
        ):
            if lines[i].startswith("      #"):
                i += 1
                continue
            path = lines[i][8:].split("#")[0].strip()
            if not CODE.match(path):
                kept.append(lines[i])
            i += 1
        out += kept
        module = stage_of.get(current, current)
        if current == "audit":
            out.append("      # The code of every stage (the manifest hashes it) and its own.")
            code = ["audits", "custodian", "governance", "privacy", "stores", "training"]
        else:
            out.append(
                f"      # custodian/stages/{module}.py and every repository module it imports"
            )
            out.append("      # (tools/update_stage_deps.py writes it;")
            out.append("      # tests/custodian/test_stage_deps.py checks it).")
            code = D[module]
        out += [f"      - {c}" for c in code]
        continue
    out.append(line)
    i += 1
Path("dvc.yaml").write_text("\n".join(out), encoding="utf-8")
