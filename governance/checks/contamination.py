"""Reference contamination: rows of a registered benchmark/reference set inside train.

References are compared on the feature columns only: a benchmark item whose
inputs were trained on is contaminated whatever label either copy carries.
"""

from __future__ import annotations

import numpy as np

from governance.checks.duplicates import overlap_severity, split_chance
from governance.checks.findings import Finding, FindingType, Severity
from governance.checks.frames import HashedFrame, ScanContext
from governance.checks.near import near_rows, train_features
from governance.checks.registry import detector, make_finding, share
from governance.checks.similarity import isin


@detector(FindingType.reference_contamination)
def reference_contamination(ctx: ScanContext) -> list[Finding]:
    findings = []
    for reference in ctx.references.values():
        exact = _exact(ctx, reference)
        if exact is not None:
            findings.append(exact)
        for near in near_rows(ctx, reference):
            findings.append(
                make_finding(
                    ctx,
                    FindingType.reference_contamination,
                    Severity.warning,
                    count=len(near.rows),
                    columns=near.columns,
                    train_rows=near.train_rows,
                    reference_rows=near.rows,
                    reference=reference.name,
                    detail=(
                        f"{share(len(near.rows), len(reference))} rows of reference"
                        f" {reference.name!r} are near-copies of train rows, {near.how};"
                        " scores on that benchmark would partly measure memorisation."
                    ),
                )
            )
    return findings


def _exact(ctx: ScanContext, reference: HashedFrame) -> Finding | None:
    columns = reference.feature_columns
    train = train_features(ctx, reference)
    in_train = isin(reference.features, train)
    count = int(in_train.sum())
    if not count:
        return None
    severity, chance_note = overlap_severity(
        count / len(reference),
        split_chance(ctx, columns),
        ctx.config,
    )
    return make_finding(
        ctx,
        FindingType.reference_contamination,
        severity,
        count=count,
        columns=columns,
        train_rows=np.flatnonzero(isin(train, reference.features[in_train])),
        reference_rows=np.flatnonzero(in_train),
        reference=reference.name,
        detail=(
            f"{share(count, len(reference))} rows of reference {reference.name!r} appear in"
            f" train with identical features{chance_note} so scores on that benchmark"
            " would partly measure memorisation."
        ),
    )
