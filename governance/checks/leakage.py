"""Leakage through identifiers (groups), time order and features that encode the label."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from governance.checks import details
from governance.checks.findings import Finding, FindingType, Severity
from governance.checks.frames import ColumnKind, ScanContext
from governance.checks.predictive import MAX_CATEGORIES, METRIC, Predictability, Target, Task
from governance.checks.registry import detector, make_finding
from governance.checks.rules import find_rule
from governance.checks.similarity import isin

_NAT = np.iinfo(np.int64).min
# Quantile bins for per-value rules on numbers: enough for non-monotone
# relations, few enough that every bin holds many rows at any sample size.
_BINS = 64


@detector(FindingType.group_leakage)
def group_leakage(ctx: ScanContext) -> list[Finding]:
    column = ctx.roles.id_column
    if column is None:
        return []
    ids = {}
    for split in (ctx.train, ctx.test):
        present = split.frame[column].notna().to_numpy()
        ids[split.name] = np.where(present, split.cells[column], 0), present
    train_ids, train_present = ids["train"]
    test_ids, test_present = ids["test"]
    shared = pd.unique(test_ids[test_present & isin(test_ids, train_ids[train_present])])
    if not len(shared):
        return []
    train_rows = np.flatnonzero(train_present & isin(train_ids, shared))
    test_rows = np.flatnonzero(test_present & isin(test_ids, shared))
    return [
        make_finding(
            ctx,
            FindingType.group_leakage,
            Severity.critical,
            count=len(shared),
            columns=[column],
            train_rows=train_rows,
            test_rows=test_rows,
            detail=details.group_leakage(
                column, len(shared), len(train_rows), len(test_rows), len(ctx.test)
            ),
        )
    ]


@detector(FindingType.temporal_leakage)
def temporal_leakage(ctx: ScanContext) -> list[Finding]:
    column, train, test = ctx.roles.time_column, ctx.train.time, ctx.test.time
    if column is None or train is None or test is None:
        return []
    train_present, test_present = _present(train), _present(test)
    if not train_present.any() or not test_present.any():
        return []
    earliest_test = test[test_present].min()
    late_train = train_present & (train > earliest_test)
    count = int(late_train.sum())
    if not count:
        return []
    early_test = test_present & (test < train[train_present].max())
    rate = count / int(train_present.sum())
    critical = rate > ctx.config.temporal_critical_fraction
    return [
        make_finding(
            ctx,
            FindingType.temporal_leakage,
            Severity.critical if critical else Severity.warning,
            count=count,
            columns=[column],
            train_rows=np.flatnonzero(late_train),
            test_rows=np.flatnonzero(early_test),
            detail=details.temporal_leakage(
                column,
                count,
                int(train_present.sum()),
                details.time_text(earliest_test, isinstance(earliest_test, np.integer)),
            ),
        )
    ]


def _present(times: np.ndarray) -> np.ndarray:
    return ~np.isnan(times) if times.dtype.kind == "f" else times != _NAT


_METRIC = {
    Task.binary: "ROC AUC",
    Task.multiclass: "balanced accuracy",
    Task.regression: "|Spearman rho|",
}


@dataclass(frozen=True)
class _Target:
    """The label of the sampled rows, in the form its task's scores need."""

    task: Task
    values: np.ndarray  # 0/1 (binary), class index (multiclass) or the number (regression)
    folds: np.ndarray  # 0/1 per row: per-value rules are learnt on one fold, scored on the other
    n_classes: int
    positive: str  # binary: how the positive value is written; else ""


Rows = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class LabelAnalysis:
    """The target-leakage findings, and the columns they show to encode the label."""

    findings: tuple[Finding, ...]
    encoders: tuple[str, ...]  # columns of critical findings, in train's order


def label_analysis(ctx: ScanContext) -> LabelAnalysis:
    """Single-column scores, then a model over the rest; computed once per scan."""
    if "label_analysis" not in ctx.derived:
        ctx.derived["label_analysis"] = _analyse(ctx)
    return ctx.derived["label_analysis"]  # type: ignore[return-value]


@detector(FindingType.target_leakage)
def target_leakage(ctx: ScanContext) -> list[Finding]:
    return list(label_analysis(ctx).findings)


def _analyse(ctx: ScanContext) -> LabelAnalysis:
    label = ctx.roles.label
    if label is None:
        return LabelAnalysis((), ())
    config = ctx.config
    rows = labelled_sample(ctx, label, config.target_leakage_max_rows)
    target = target_of(ctx, label, rows, config.max_classes, config.seed)
    if target is None:
        return LabelAnalysis((), ())
    findings = [
        finding
        for column in ctx.roles.features
        if ctx.roles.kinds[column] is not ColumnKind.text
        for finding in [_single_column(ctx, column, rows, target)]
        if finding is not None
    ]
    single = {f.columns[0]: f.severity for f in findings}
    model = _multi_column(ctx, label, target, rows, single)
    if model is not None:
        findings.append(model)
    encoders = {c for f in findings if f.severity is Severity.critical for c in f.columns}
    return LabelAnalysis(tuple(findings), tuple(c for c in ctx.roles.features if c in encoders))


def _single_column(ctx: ScanContext, column: str, rows: Rows, target: _Target) -> Finding | None:
    config, label = ctx.config, ctx.roles.label
    score, by_missing = column_score(ctx, column, rows, target)
    if score < config.target_leakage_warning:
        return None
    critical = score >= config.target_leakage_critical
    how = " through which of its values are missing" if by_missing else ""
    why = (
        "it almost certainly encodes the label, and a model would learn that instead"
        if critical
        else "check that it is known before the label is, or a model will lean on it"
    )
    return make_finding(
        ctx,
        FindingType.target_leakage,
        Severity.critical if critical else Severity.warning,
        count=1,
        columns=[column],
        detail=(
            f"{column} alone predicts {label}{how} with {_METRIC[target.task]}"
            f" {score:.3f} over {len(target.values):,} rows: {why}."
        ),
    )


def model_inputs(ctx: ScanContext, leaving_out: Collection[str] = ()) -> list[str]:
    """Features a model would train on: not text, not sensitive, not ``leaving_out``."""
    sensitive = set(ctx.config.sensitive_columns)
    return [
        c
        for c in ctx.roles.features
        if ctx.roles.kinds[c] is not ColumnKind.text and c not in sensitive and c not in leaving_out
    ]


def design(
    ctx: ScanContext, columns: Sequence[str], rows: Rows
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Columns as numbers for the trees (categories as codes), and which hold categories.

    Identifier-like categories are left out: a code per row teaches nothing.
    """
    values: dict[str, np.ndarray] = {}
    categorical = []
    for column in columns:
        if ctx.roles.kinds[column] in (ColumnKind.numeric, ColumnKind.datetime):
            values[column] = _gathered(ctx, column, rows, "numbers")
            continue
        codes = _codes(ctx, column, rows)
        distinct = int(codes.max(initial=-1)) + 1
        if distinct > ctx.config.identifier_like_fraction * len(codes):
            continue
        values[column] = codes.astype(np.float64)
        if distinct <= MAX_CATEGORIES:
            categorical.append(column)
    return values, categorical


def _multi_column(
    ctx: ScanContext, label: str, target: _Target, rows: Rows, single: dict[str, Severity]
) -> Finding | None:
    """The label predicted from the inputs together, with the fewest columns that do it.

    Columns already critical on their own are left out, so a second,
    spread-out leak is not hidden behind the first.
    """
    config = ctx.config
    critical = [c for c, s in single.items() if s is Severity.critical]
    keep = _subsample(len(target.values), config.model_max_rows, config.seed)
    rows = (rows[0][keep[: len(rows[0])]], rows[1][keep[len(rows[0]) :]])
    values, categorical = design(ctx, model_inputs(ctx, critical), rows)
    if len(values) < 2:
        return None
    y = target.values[keep]
    model = Predictability(values, categorical, Target(label, target.task, y), config.seed)
    full = model.fit(list(values))
    if full.score < config.target_leakage_model_warning:
        return None
    explained = model.explain(list(values), config.max_set_size)
    columns = explained.minimal.columns
    if len(columns) == 1 and columns[0] in single:
        return None  # that column's own finding already says it
    rule = None
    if target.task is Task.binary and not set(columns) & set(categorical):
        rule = find_rule(label, target.positive, y, columns, values, config.rule_agreement)
    critical = full.score >= config.target_leakage_model_critical
    severity = Severity.critical if critical else Severity.warning
    metric = METRIC[target.task]
    if explained.complete:
        which = (
            f"{_listed(columns)} together predict {label} with {metric}"
            f" {explained.minimal.score:.4f} (all {len(values)} inputs: {full.score:.4f})"
        )
    else:
        which = (
            f"the {len(values)} inputs together predict {label} with {metric} {full.score:.4f};"
            f" no {config.max_set_size} of them do as well, {_listed(columns)} come closest"
        )
    stated = f"; the rule {rule.text} holds on {rule.agree:,} of {rule.rows:,} rows" if rule else ""
    return make_finding(
        ctx,
        FindingType.target_leakage,
        severity,
        count=len(columns),
        columns=columns,
        rule=rule.text if rule else None,
        detail=(
            f"{which}, scored out of fold by boosted trees over {len(y):,} sampled rows{stated}:"
            " the label is (almost) a function of these inputs, so a model learns that"
            " function instead of the outcome."
        ),
    )


def labelled_sample(ctx: ScanContext, column: str, limit: int) -> Rows:
    """Train and test rows (sampled down to ``limit``) where ``column`` is present."""
    config = ctx.config
    rows = _sample(len(ctx.train), len(ctx.test), limit, config.seed)
    present = ~_missing(ctx, column, rows)
    return rows[0][present[: len(rows[0])]], rows[1][present[len(rows[0]) :]]


def _subsample(n: int, limit: int, seed: int) -> np.ndarray:
    """A mask keeping at most ``limit`` of ``n`` rows, at random."""
    keep = np.ones(n, dtype=bool)
    if n > limit:
        keep[:] = False
        keep[np.random.default_rng(seed + 2).choice(n, size=limit, replace=False)] = True
    return keep


def _listed(columns: Sequence[str]) -> str:
    return columns[0] if len(columns) == 1 else f"{', '.join(columns[:-1])} and {columns[-1]}"


def _sample(n_train: int, n_test: int, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of train and test, sampled in proportion down to ``limit`` in all."""
    if n_train + n_test <= limit:
        return np.arange(n_train), np.arange(n_test)
    kept = limit / (n_train + n_test)
    rng = np.random.default_rng(seed)
    train = rng.choice(n_train, size=round(n_train * kept), replace=False)
    test = rng.choice(n_test, size=round(n_test * kept), replace=False)
    return np.sort(train), np.sort(test)


def _gathered(
    ctx: ScanContext, column: str, rows: tuple[np.ndarray, np.ndarray], field: str
) -> np.ndarray:
    """``field`` ("cells" or "numbers") of ``column`` at the sampled rows of both splits."""
    splits = (ctx.train, ctx.test)
    return np.concatenate(
        [getattr(split, field)[column][r] for split, r in zip(splits, rows, strict=True)]
    )


def _missing(ctx: ScanContext, column: str, rows: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return np.concatenate(
        [
            split.frame[column].isna().to_numpy()[r]
            for split, r in zip((ctx.train, ctx.test), rows, strict=True)
        ]
    )


def _codes(ctx: ScanContext, column: str, rows: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return pd.factorize(_gathered(ctx, column, rows, "cells"))[0]


def target_of(
    ctx: ScanContext, label: str, rows: Rows, max_classes: int, seed: int
) -> _Target | None:
    """The column at ``rows`` as a prediction target; None when it is no usable target."""
    codes = _codes(ctx, label, rows)
    n_classes = int(codes.max()) + 1 if len(codes) else 0
    if n_classes < 2:
        return None
    folds = np.random.default_rng(seed + 1).integers(0, 2, size=len(codes))
    numeric = ctx.roles.kinds[label] in (ColumnKind.numeric, ColumnKind.datetime)
    if numeric and n_classes > max_classes:
        return _Target(Task.regression, _gathered(ctx, label, rows, "numbers"), folds, 0, "")
    if n_classes == 2:
        if numeric:  # the larger value is the positive class, as in 0/1 labels
            values = _gathered(ctx, label, rows, "numbers")
            top = values.max()
            return _Target(Task.binary, (values == top).astype(float), folds, 2, f"{top:g}")
        first = int(np.argmax(codes == 1))
        side, at = (0, first) if first < len(rows[0]) else (1, first - len(rows[0]))
        positive = repr((ctx.train, ctx.test)[side].frame[label].iloc[rows[side][at]])
        return _Target(Task.binary, codes.astype(float), folds, 2, positive)
    if n_classes > max_classes:
        return None  # a categorical label with that many classes is an identifier, not a target
    return _Target(Task.multiclass, codes, folds, n_classes, "")


def column_score(
    ctx: ScanContext, column: str, rows: tuple[np.ndarray, np.ndarray], target: _Target
) -> tuple[float, bool]:
    """(best single-feature score, whether missingness alone reaches it)."""
    missing = _missing(ctx, column, rows)
    missing_score = (
        _CODE_SCORE[target.task](missing.astype(np.int64), target)
        if missing.any() and not missing.all()
        else 0.0
    )
    if ctx.roles.kinds[column] in (ColumnKind.numeric, ColumnKind.datetime):
        values = _gathered(ctx, column, rows, "numbers")
        value_score = _CODE_SCORE[target.task](_quantile_codes(values), target)
        ranking = _RANKING_SCORE.get(target.task)
        if ranking is not None:
            value_score = max(value_score, ranking(values, target))
    else:
        codes = _codes(ctx, column, rows)
        distinct = int(codes.max(initial=-1)) + 1
        identifier_like = distinct > ctx.config.identifier_like_fraction * len(codes)
        value_score = 0.0 if identifier_like else _CODE_SCORE[target.task](codes, target)
    return max(value_score, missing_score), missing_score >= value_score


def _quantile_codes(values: np.ndarray) -> np.ndarray:
    """Bin numbers into at most ``_BINS`` quantile bins; missing values get a bin of their own."""
    present = ~np.isnan(values)
    if not present.any():
        return np.zeros(len(values), dtype=np.int64)
    edges = np.unique(np.quantile(values[present], np.linspace(0, 1, _BINS + 1)[1:-1]))
    codes = np.searchsorted(edges, values, side="right")
    return np.where(present, codes, len(edges) + 1)


def _ranks_nan_at_ends(values: np.ndarray) -> tuple[np.ndarray, ...]:
    """Ranks with missing values placed first, then last: a rule may use either end."""
    missing = np.isnan(values)
    if not missing.any():
        return (rankdata(values),)
    return (
        rankdata(np.where(missing, -np.inf, values)),
        rankdata(np.where(missing, np.inf, values)),
    )


def _auc_ranking(values: np.ndarray, target: _Target) -> float:
    return max(_auc(ranks, target.values) for ranks in _ranks_nan_at_ends(values))


def _spearman_ranking(values: np.ndarray, target: _Target) -> float:
    label_ranks = rankdata(target.values)
    return max(_abs_correlation(ranks, label_ranks) for ranks in _ranks_nan_at_ends(values))


def _auc(ranks: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC from ranks (Mann-Whitney U), in whichever direction is better."""
    n_pos = float(positive.sum())
    n_neg = len(positive) - n_pos
    if not n_pos or not n_neg:
        return 0.5
    auc = (float(ranks[positive == 1].sum()) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return max(auc, 1.0 - auc)


def _abs_correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return abs(float((a * b).sum())) / norm if norm else 0.0


def _out_of_fold_mean(codes: np.ndarray, target: _Target) -> np.ndarray:
    """Each row scored by the mean label of its value in the other fold (shrunk to the mean)."""
    out = np.empty(len(codes))
    size = int(codes.max(initial=0)) + 1
    for fold in (0, 1):
        learn, score = target.folds != fold, target.folds == fold
        prior = float(target.values[learn].mean()) if learn.any() else 0.0
        counts = np.bincount(codes[learn], minlength=size)
        sums = np.bincount(codes[learn], weights=target.values[learn], minlength=size)
        out[score] = ((sums + prior) / (counts + 1))[codes[score]]
    return out


def _auc_codes(codes: np.ndarray, target: _Target) -> float:
    return _auc(rankdata(_out_of_fold_mean(codes, target)), target.values)


def _spearman_codes(codes: np.ndarray, target: _Target) -> float:
    return _abs_correlation(rankdata(_out_of_fold_mean(codes, target)), rankdata(target.values))


def _balanced_accuracy_codes(codes: np.ndarray, target: _Target) -> float:
    """Balanced accuracy of predicting, per value, the other fold's majority class."""
    k, size = target.n_classes, int(codes.max(initial=0)) + 1
    classes = target.values.astype(np.int64)
    predicted = np.empty(len(codes), dtype=np.int64)
    for fold in (0, 1):
        learn, score = target.folds != fold, target.folds == fold
        prior = np.bincount(classes[learn], minlength=k) / max(int(learn.sum()), 1)
        counts = np.bincount(codes[learn] * k + classes[learn], minlength=size * k)
        # The prior (< 1) only breaks ties and fills values unseen in the learning fold.
        majority = (counts.reshape(size, k) + prior).argmax(axis=1)
        predicted[score] = majority[codes[score]]
    recalls = [np.mean(predicted[classes == c] == c) for c in range(k) if (classes == c).any()]
    return float(np.mean(recalls))


_RANKING_SCORE: dict[Task, Callable[[np.ndarray, _Target], float]] = {
    Task.binary: _auc_ranking,
    Task.regression: _spearman_ranking,
}
_CODE_SCORE: dict[Task, Callable[[np.ndarray, _Target], float]] = {
    Task.binary: _auc_codes,
    Task.multiclass: _balanced_accuracy_codes,
    Task.regression: _spearman_codes,
}
