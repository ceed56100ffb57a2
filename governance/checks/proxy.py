"""Proxies: model inputs that stand in for a declared sensitive attribute.

Two directions, both with the boosted trees of ``predictive`` on a bounded
sample: inputs that together predict a sensitive attribute (``linc`` gives
``income`` back), and an input that is (almost) a function of sensitive
attributes (``child`` is ``xage < 18``; ``fchild`` needs ``female`` and
``xage`` together). Either way a model trained on the input uses the
attribute the declaration says is evaluated only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from governance.checks.findings import Finding, FindingType, Severity
from governance.checks.frames import ScanContext
from governance.checks.leakage import (
    column_score,
    design,
    labelled_sample,
    model_inputs,
    target_of,
)
from governance.checks.predictive import METRIC, Explanation, Predictability, Target, Task
from governance.checks.registry import detector, make_finding

# How far below the warning score the screen still passes an input (see ``_screened``).
_SCREEN_MARGIN = 0.1


@dataclass(frozen=True)
class _Proxy:
    inputs: tuple[str, ...]
    sensitive: tuple[str, ...]
    score: float
    task: Task
    forward: bool  # the inputs predict the attribute (else the attribute predicts the input)


@detector(FindingType.proxy)
def proxy(ctx: ScanContext) -> list[Finding]:
    sensitive = [c for c in ctx.config.sensitive_columns if c in ctx.roles.kinds]
    inputs = model_inputs(ctx)
    if not sensitive or not inputs:
        return []
    found: dict[tuple[frozenset[str], frozenset[str]], _Proxy] = {}
    for candidate in [*_predicting(ctx, sensitive, inputs), *_derived(ctx, sensitive, inputs)]:
        key = (frozenset(candidate.inputs), frozenset(candidate.sensitive))
        if key not in found or candidate.score > found[key].score:
            found[key] = candidate
    return [_finding(ctx, p) for p in found.values()]


def _predicting(ctx: ScanContext, sensitive: Sequence[str], inputs: Sequence[str]) -> list[_Proxy]:
    """Per sensitive attribute: the fewest inputs that predict it, if they do well enough."""
    config = ctx.config
    found = []
    for attribute in sensitive:
        explained = _explain(ctx, attribute, inputs)
        if explained is not None:
            found.append(
                _Proxy(
                    explained[0].minimal.columns,
                    (attribute,),
                    explained[0].minimal.score,
                    explained[1],
                    forward=True,
                )
            )
    return [p for p in found if p.score >= config.proxy_warning]


def _derived(ctx: ScanContext, sensitive: Sequence[str], inputs: Sequence[str]) -> list[_Proxy]:
    """Per input: the fewest sensitive attributes it is (almost) a function of.

    Every input is a target here, so each is first screened on a small sample;
    only those that come near the warning score get the full fit.
    """
    found = []
    for column in inputs:
        if not _screened(ctx, column, sensitive):
            continue
        explained = _explain(ctx, column, sensitive)
        if explained is not None and explained[0].minimal.score >= ctx.config.proxy_warning:
            found.append(
                _Proxy(
                    (column,),
                    explained[0].minimal.columns,
                    explained[0].minimal.score,
                    explained[1],
                    forward=False,
                )
            )
    return found


def _screened(ctx: ScanContext, target_column: str, predictors: Sequence[str]) -> bool:
    """Whether any one of ``predictors`` comes within reach of the warning score.

    The single-column scores of ``leakage`` (binned, out of fold, vectorised)
    cost milliseconds where a boosted-tree fit costs a tenth of a second; an
    input that is a function of several attributes together (``fchild``) is
    still well predicted by one of them alone, which is all the screen asks.
    """
    config = ctx.config
    rows = labelled_sample(ctx, target_column, config.model_max_rows)
    target = target_of(ctx, target_column, rows, config.max_classes, config.seed)
    if target is None:
        return False
    floor = config.proxy_warning - _SCREEN_MARGIN
    return any(
        column_score(ctx, c, rows, target)[0] >= floor for c in predictors if c != target_column
    )


def _explain(
    ctx: ScanContext, target_column: str, predictors: Sequence[str]
) -> tuple[Explanation, Task] | None:
    """How well ``predictors`` predict ``target_column``; None when it cannot be a target
    or they do not reach the warning score."""
    config = ctx.config
    rows = labelled_sample(ctx, target_column, config.model_max_rows)
    target = target_of(ctx, target_column, rows, config.max_classes, config.seed)
    if target is None:
        return None
    values, categorical = design(ctx, [c for c in predictors if c != target_column], rows)
    if not values:
        return None
    model = Predictability(
        values, categorical, Target(target_column, target.task, target.values), config.seed
    )
    if model.fit(list(values)).score < config.proxy_warning:
        return None
    return model.explain(list(values), config.max_set_size), target.task


def _finding(ctx: ScanContext, found: _Proxy) -> Finding:
    config = ctx.config
    metric = METRIC[found.task]
    inputs, sensitive = ", ".join(found.inputs), ", ".join(found.sensitive)
    if found.forward:
        how = (
            f"{inputs} {'predicts' if len(found.inputs) == 1 else 'together predict'} the"
            f" sensitive attribute {sensitive} with {metric} {found.score:.3f}"
        )
    else:
        how = (
            f"{inputs} is (almost) a function of the sensitive attribute"
            f"{'s' if len(found.sensitive) > 1 else ''} {sensitive} ({metric} {found.score:.3f}"
            f" predicting {inputs} from {'them' if len(found.sensitive) > 1 else 'it'})"
        )
    critical = found.score >= config.proxy_critical
    return make_finding(
        ctx,
        FindingType.proxy,
        Severity.critical if critical else Severity.warning,
        count=len(found.inputs),
        columns=found.inputs,
        sensitive_columns=found.sensitive,
        detail=(
            f"{how}, scored out of fold by boosted trees: a model trained on {inputs}"
            f" uses {sensitive}, which is declared sensitive and evaluated only."
        ),
    )
