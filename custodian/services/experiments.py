"""The privacy-utility curve from DVC experiments (``custodian experiments curve``).

After a sweep such as ``dvc exp run -S privacy.target_epsilon=1``, ``=2``, ... every
experiment carries its ``reports/privacy.json`` and ``reports/metrics.json``. This command
reads them from ``dvc exp show --json`` and writes one point per run (the workspace, its
baseline commit and every experiment that has both reports): the accountant's epsilon
against test accuracy, worst-slice accuracy and the non-private reference's accuracy.
``dvc plots show`` draws it (the plot is declared in dvc.yaml).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from audits.files import atomic_write_json
from governance.errors import InputError

PRIVACY_REPORT = "reports/privacy.json"
METRICS_REPORT = "reports/metrics.json"


def write_curve(out: Path) -> list[dict[str, Any]]:
    """Write the privacy-utility points of every run ``dvc exp show`` lists to ``out``."""
    points = curve_points(_exp_show())
    if not points:
        raise InputError(
            "dvc exp show lists no run with both reports/privacy.json and "
            "reports/metrics.json; run the sweep first (see README)"
        )
    atomic_write_json(out, points)
    return points


def curve_points(shown: object) -> list[dict[str, Any]]:
    """One point per run in ``dvc exp show --json`` output, sorted by epsilon.

    After ``dvc exp run`` the workspace holds the last experiment's results; a run whose
    reports equal another's is one point, named after the experiment.
    """
    points: dict[tuple[Any, ...], dict[str, Any]] = {}
    for node in _runs(shown):
        data = node["data"]
        metrics = data.get("metrics") or {}
        privacy = (metrics.get(PRIVACY_REPORT) or {}).get("data")
        evaluation = (metrics.get(METRICS_REPORT) or {}).get("data")
        if not privacy or not evaluation or "epsilon" not in privacy:
            continue
        worst = evaluation.get("worst_slice") or {}
        audit = evaluation.get("privacy_audit") or {}
        point = {
            "name": node.get("name") or str(node.get("rev")),
            "rev": str(data.get("rev") or node.get("rev")),
            "target_epsilon": privacy.get("target_epsilon"),
            "epsilon": privacy["epsilon"],
            "accuracy": evaluation.get("accuracy"),
            "balanced_accuracy": evaluation.get("balanced_accuracy"),
            "roc_auc": evaluation.get("roc_auc"),
            "worst_slice_accuracy": worst.get("accuracy"),
            "worst_slice": f"{worst.get('attribute')}={worst.get('slice')}" if worst else None,
            "reference_accuracy": (evaluation.get("reference") or {}).get("accuracy"),
            "epsilon_lower_bound": audit.get("epsilon_lower_bound"),
        }
        key = (json.dumps(privacy, sort_keys=True), json.dumps(evaluation, sort_keys=True))
        if key not in points or points[key]["rev"] == "workspace":
            points[key] = point
    return sorted(points.values(), key=lambda p: (p["epsilon"], p["name"]))


def _runs(node: object) -> Iterator[Mapping[str, Any]]:
    """Every entry with ``data`` in the nested commits/experiments/revs structure."""
    if isinstance(node, list):
        for item in node:
            yield from _runs(item)
    elif isinstance(node, dict):
        if isinstance(node.get("data"), dict):
            yield node
        for key in ("experiments", "revs"):
            yield from _runs(node.get(key))


def _exp_show() -> object:
    try:
        result = subprocess.run(
            ["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=False
        )
    except OSError as err:
        raise InputError(f"cannot run dvc: {err.strerror}") from None
    if result.returncode != 0:
        raise InputError(f"dvc exp show failed: {result.stderr.strip().splitlines()[-1:]}")
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise InputError("dvc exp show --json printed something that is not JSON") from None
