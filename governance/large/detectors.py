"""Out-of-core detectors: SQL over the per-split hash tables, the in-memory scan's findings.

Each detector here answers exactly what its in-memory namesake in
``governance.checks`` answers (the same count semantics, severities, columns
and row lists; see ``FindingType``), but only distinct hashes that matter
and at most ``max_rows_listed + 1`` row positions per list ever leave DuckDB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from governance.checks import details
from governance.checks.duplicates import overlap_severity, value_space_chance
from governance.checks.findings import Finding, FindingType, Severity
from governance.checks.registry import registrar
from governance.large.engine import Kind, LargeContext, normalised_cells
from governance.large.sql import ident

# Value frequencies for the chance rule are estimated from this many train rows.
_CHANCE_SAMPLE = 200_000

LargeDetector = Callable[[LargeContext], list[Finding]]

DETECTORS: dict[FindingType, LargeDetector] = {}
detector = registrar(DETECTORS)


class _Rows:
    """The first ``max_rows_listed`` row positions a query selects, and whether there are more."""

    def __init__(self, ctx: LargeContext, sql: str) -> None:
        cap = ctx.config.max_rows_listed
        rows = [
            int(r[0])
            # Positions are unique per split, and every query selects from one split.
            for r in ctx.engine.rows(f"SELECT pos FROM ({sql}) ORDER BY pos LIMIT {cap + 1}")
        ]
        self.rows = tuple(rows[:cap])
        self.truncated = len(rows) > cap


def _finding(
    kind: FindingType,
    severity: Severity,
    *,
    count: int,
    columns: Sequence[str],
    detail: str,
    train: _Rows | None = None,
    test: _Rows | None = None,
) -> Finding:
    return Finding(
        type=kind,
        severity=severity,
        count=count,
        columns=tuple(columns),
        train_rows=train.rows if train else (),
        test_rows=test.rows if test else (),
        rows_truncated=any(side is not None and side.truncated for side in (train, test)),
        detail=detail,
    )


def _count(ctx: LargeContext, sql: str) -> int:
    return int(ctx.engine.value(sql) or 0)


def _temp(ctx: LargeContext, name: str, sql: str) -> str:
    ctx.engine.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")
    return name


@detector(FindingType.exact_duplicate)
def exact_duplicates(ctx: LargeContext) -> list[Finding]:
    train, test = ctx.table("train"), ctx.table("test")
    shared = _temp(
        ctx, "exact_shared", f"SELECT DISTINCT r FROM {test} SEMI JOIN {train} USING (r)"
    )
    matched = f"SELECT pos FROM {test} SEMI JOIN {shared} USING (r)"
    count = _count(ctx, f"SELECT count(*) FROM ({matched})")
    if not count:
        return []
    n_test = ctx.rows["test"]
    severity, chance_note = overlap_severity(count / n_test, _chance(ctx), ctx.config)
    return [
        _finding(
            FindingType.exact_duplicate,
            severity,
            count=count,
            columns=ctx.plan.compared,
            train=_Rows(ctx, f"SELECT pos FROM {train} SEMI JOIN {shared} USING (r)"),
            test=_Rows(ctx, matched),
            detail=details.exact_duplicate(count, n_test, chance_note),
        )
    ]


def _chance(ctx: LargeContext) -> float:
    """``duplicates.value_space_chance`` from the compared columns of sampled train rows.

    Bernoulli sampling streams (a reservoir would hold the sample in memory),
    and each column is grouped by the hash of its normalised cell on its own.
    """
    n_train = ctx.rows["train"]
    source = ident("train_source")
    if n_train > _CHANCE_SAMPLE:
        percent = 100.0 * _CHANCE_SAMPLE / n_train
        source += f" USING SAMPLE {percent:.6f}% (bernoulli, {ctx.config.seed})"
    collisions = []
    for column in ctx.plan.compared:
        cells = normalised_cells(ctx.plan, "train", source, [column])
        pairs, m = ctx.engine.rows(
            f"SELECT sum(n * (n - 1.0)), sum(n) FROM (SELECT count(*) AS n FROM ({cells})"
            f" GROUP BY hash({ident(column)}))"
        )[0]
        m = float(m or 0)
        collisions.append(float(pairs or 0.0) / (m * (m - 1.0)) if m >= 2 else 1.0)
    return value_space_chance(collisions, n_train)


@detector(FindingType.duplicate_rows)
def duplicate_rows(ctx: LargeContext) -> list[Finding]:
    findings = []
    for split in ("train", "test"):
        table = ctx.table(split)
        groups = _temp(
            ctx,
            f"repeats_{split}",
            f"SELECT r, min(pos) AS first, count(*) AS n FROM {table}"
            " GROUP BY r HAVING count(*) > 1",
        )
        count = _count(ctx, f"SELECT sum(n - 1) FROM {groups}")
        if not count:
            continue
        rows = _Rows(
            ctx, f"SELECT h.pos FROM {table} h JOIN {groups} g USING (r) WHERE h.pos <> g.first"
        )
        findings.append(
            _finding(
                FindingType.duplicate_rows,
                Severity.warning,
                count=count,
                columns=ctx.plan.compared,
                detail=details.duplicate_rows(count, ctx.rows[split], split),
                **{split: rows},
            )
        )
    return findings


@detector(FindingType.conflicting_labels)
def conflicting_labels(ctx: LargeContext) -> list[Finding]:
    """Labelled rows whose features recur, labelled otherwise, in their own split or in train.

    Per split, labelled rows grouped by feature hash: ``rmin <> rmax`` means
    the features carry two or more labels (``r`` hashes features and label).
    """
    label = ctx.plan.label
    if label is None:
        return []
    columns = ctx.plan.compared
    labellings = {
        split: _temp(
            ctx,
            f"labelling_{split}",
            f"SELECT f, min(r) AS rmin, max(r) AS rmax FROM {ctx.table(split)}"
            " WHERE labelled GROUP BY f",
        )
        for split in ("train", "test")
    }
    findings = []
    for split in ("train", "test"):
        table, labelling = ctx.table(split), labellings[split]
        ambiguous = (
            f"SELECT h.pos FROM {table} h JOIN {labelling} l USING (f)"
            " WHERE h.labelled AND l.rmin <> l.rmax"
        )
        count = _count(ctx, f"SELECT count(*) FROM ({ambiguous})")
        if count:
            findings.append(
                _finding(
                    FindingType.conflicting_labels,
                    Severity.warning,
                    count=count,
                    columns=columns,
                    detail=details.conflicting_labels_within(count, ctx.rows[split], split),
                    **{split: _Rows(ctx, ambiguous)},
                )
            )

    def conflicts(split: str, other: str) -> str:
        """Labelled rows of ``split`` whose features ``other`` labels otherwise (or ambiguously)."""
        return (
            f"SELECT h.pos FROM {ctx.table(split)} h JOIN {labellings[other]} l USING (f)"
            " WHERE h.labelled AND (l.rmin <> l.rmax OR l.rmin <> h.r)"
        )

    count = _count(ctx, f"SELECT count(*) FROM ({conflicts('test', 'train')})")
    if count:
        findings.append(
            _finding(
                FindingType.conflicting_labels,
                Severity.warning,
                count=count,
                columns=columns,
                train=_Rows(ctx, conflicts("train", "test")),
                test=_Rows(ctx, conflicts("test", "train")),
                detail=details.conflicting_labels_across(count, ctx.rows["test"]),
            )
        )
    return findings


@detector(FindingType.group_leakage)
def group_leakage(ctx: LargeContext) -> list[Finding]:
    column = ctx.plan.id_column
    if column is None:
        return []
    train, test = ctx.table("train"), ctx.table("test")
    shared = _temp(
        ctx,
        "shared_ids",
        f"SELECT id FROM {test} WHERE id IS NOT NULL"
        f" INTERSECT SELECT id FROM {train} WHERE id IS NOT NULL",
    )
    count = _count(ctx, f"SELECT count(*) FROM {shared}")
    if not count:
        return []
    selected = {
        split: f"SELECT pos FROM {ctx.table(split)} SEMI JOIN {shared} USING (id)"
        for split in ("train", "test")
    }
    n_train = _count(ctx, f"SELECT count(*) FROM ({selected['train']})")
    n_test = _count(ctx, f"SELECT count(*) FROM ({selected['test']})")
    return [
        _finding(
            FindingType.group_leakage,
            Severity.critical,
            count=count,
            columns=[column],
            train=_Rows(ctx, selected["train"]),
            test=_Rows(ctx, selected["test"]),
            detail=details.group_leakage(column, count, n_train, n_test, ctx.rows["test"]),
        )
    ]


@detector(FindingType.temporal_leakage)
def temporal_leakage(ctx: LargeContext) -> list[Finding]:
    column = ctx.plan.time_column
    if column is None:
        return []
    train, test = ctx.table("train"), ctx.table("test")
    ((train_present, earliest_test),) = ctx.engine.rows(
        f"SELECT (SELECT count(t) FROM {train}), (SELECT min(t) FROM {test})"
    )
    if not train_present or earliest_test is None:
        return []
    late_train = f"SELECT pos FROM {train} WHERE t > (SELECT min(t) FROM {test})"
    count = _count(ctx, f"SELECT count(*) FROM ({late_train})")
    if not count:
        return []
    critical = count / train_present > ctx.config.temporal_critical_fraction
    return [
        _finding(
            FindingType.temporal_leakage,
            Severity.critical if critical else Severity.warning,
            count=count,
            columns=[column],
            train=_Rows(ctx, late_train),
            test=_Rows(ctx, f"SELECT pos FROM {test} WHERE t < (SELECT max(t) FROM {train})"),
            detail=details.temporal_leakage(
                column,
                count,
                int(train_present),
                details.time_text(earliest_test, ctx.plan.time_kind is Kind.instant),
            ),
        )
    ]
