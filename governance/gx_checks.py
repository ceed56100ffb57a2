"""Leakage and contamination checks as Great Expectations expectations.

GX has no cross-split expectations for pandas (its query expectations are
SQL-only), so the splits are stacked into one frame with a split-label column
and one table metric runs :func:`governance.checks.scan` over it. One
expectation per finding type reads that metric (GX computes it once per batch)
and fails on an unwaived critical finding, so the results render in Data Docs
beside the schema suites.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import great_expectations as gx
import pandas as pd
from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import BatchExpectation
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider
from great_expectations.render import (
    LegacyDiagnosticRendererType,
    LegacyRendererType,
    RenderedStringTemplateContent,
)
from great_expectations.render.renderer.renderer import renderer

from governance.checks import CheckConfig, Finding, FindingType, Severity, scan
from governance.docs_offline import offline_sites

SPLIT_COLUMN = "__custodian_split__"
# Row numbers shown per side in a Data Docs sentence; the JSON report has them all.
_EXAMPLE_ROWS = 5
TRAIN, TEST = "train", "test"
REFERENCE_PREFIX = "reference:"


def stack_splits(
    train: pd.DataFrame, test: pd.DataFrame, references: dict[str, pd.DataFrame]
) -> pd.DataFrame:
    """One frame, each row labelled with the split (or reference) it came from."""
    parts = [train.assign(**{SPLIT_COLUMN: TRAIN}), test.assign(**{SPLIT_COLUMN: TEST})]
    parts += [
        frame.assign(**{SPLIT_COLUMN: f"{REFERENCE_PREFIX}{name}"})
        for name, frame in references.items()
    ]
    return pd.concat(parts, ignore_index=True)


def unstack_splits(
    stacked: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    def part(label: str) -> pd.DataFrame:
        rows = stacked[stacked[SPLIT_COLUMN] == label].drop(columns=SPLIT_COLUMN)
        # Stacking fills a column one part lacks with missing values; such a
        # column is dropped again, so the part is compared on what it has.
        return rows.dropna(axis=1, how="all").reset_index(drop=True)

    names = [
        label.removeprefix(REFERENCE_PREFIX)
        for label in stacked[SPLIT_COLUMN].unique()
        if str(label).startswith(REFERENCE_PREFIX)
    ]
    return part(TRAIN), part(TEST), {n: part(f"{REFERENCE_PREFIX}{n}") for n in names}


class TableLeakageFindings(TableMetricProvider):
    """Every finding of the leakage scan over a split-labelled table, as JSON records."""

    metric_name = "table.custodian_leakage_findings"
    value_keys = ("check_config",)

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(
        cls,
        execution_engine: PandasExecutionEngine,
        metric_domain_kwargs: dict,
        metric_value_kwargs: dict,
        metrics: dict[str, Any],
        runtime_configuration: dict,
    ) -> list[dict[str, Any]]:
        frame, _, _ = execution_engine.get_compute_domain(
            metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE
        )
        config = CheckConfig.model_validate_json(metric_value_kwargs["check_config"])
        train, test, references = unstack_splits(frame)
        return [f.model_dump(mode="json") for f in scan(train, test, references, config=config)]


# GX registers the renderers a class inherits, then warns as the class's own
# replace them, which is how GX means renderers to be customised: the warning
# is silenced while this module's expectation class is made, and only then.
_REGISTRY_LOG = logging.getLogger("great_expectations.expectations.registry")
_REGISTRY_LEVEL = _REGISTRY_LOG.level
_REGISTRY_LOG.setLevel(logging.ERROR)


class ExpectNoCriticalLeakageFinding(BatchExpectation):
    """Expect the leakage scan to find no critical problem of one finding type.

    ``waived`` (with a reason, from params.yaml) turns a critical finding into a
    reported but passing result.
    """

    finding_type: FindingType
    check_config: str
    waived: str | None = None

    metric_dependencies: ClassVar[tuple[str, ...]] = ("table.custodian_leakage_findings",)
    success_keys: ClassVar[tuple[str, ...]] = ("finding_type", "check_config", "waived")
    domain_keys: ClassVar[tuple[str, ...]] = ("batch_id", "row_condition", "condition_parser")

    def _validate(
        self,
        metrics: dict,
        runtime_configuration: dict | None = None,
        execution_engine: Any = None,
    ) -> dict[str, Any]:
        findings = [
            Finding.model_validate(f)
            for f in metrics["table.custodian_leakage_findings"]
            if f["type"] == self.finding_type
        ]
        critical = [f for f in findings if f.severity is Severity.critical]
        return {
            "success": not critical or self.waived is not None,
            "result": {
                "observed_value": sum(f.count for f in findings),
                "details": {
                    "findings": [f.model_dump(mode="json") for f in findings],
                    "waived": self.waived,
                },
            },
        }

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(
        cls,
        configuration: Any = None,
        result: Any = None,
        runtime_configuration: dict | None = None,
        **kwargs: Any,
    ) -> list[RenderedStringTemplateContent]:
        """The expectation as a sentence (its findings: ``_unexpected_statement_renderer``)."""
        config = configuration if configuration is not None else result.expectation_config
        kind = config.kwargs["finding_type"]
        waived = config.kwargs.get("waived")
        return [
            _text(
                f"Expect no critical {str(kind).replace('_', ' ')} finding between the splits"
                + (f" (waived: {waived})." if waived else ".")
            )
        ]

    @classmethod
    @renderer(renderer_type=LegacyDiagnosticRendererType.UNEXPECTED_STATEMENT)
    def _unexpected_statement_renderer(
        cls,
        configuration: Any = None,
        result: Any = None,
        runtime_configuration: dict | None = None,
        **kwargs: Any,
    ) -> list[RenderedStringTemplateContent]:
        """One sentence per finding, with its counts and example rows."""
        if result is None or not result.result:
            return []
        return [_text(finding_sentence(f)) for f in findings_of(result)]

    @classmethod
    @renderer(renderer_type=LegacyDiagnosticRendererType.OBSERVED_VALUE)
    def _observed_value_renderer(
        cls,
        configuration: Any = None,
        result: Any = None,
        runtime_configuration: dict | None = None,
        **kwargs: Any,
    ) -> RenderedStringTemplateContent:
        if result is None or not result.result:
            return _text("--")
        findings = findings_of(result)
        critical = sum(f.severity is Severity.critical for f in findings)
        if not findings:
            return _text("no finding")
        return _text(f"{len(findings)} finding(s), {critical} critical")


_REGISTRY_LOG.setLevel(_REGISTRY_LEVEL)


def finding_sentence(finding: Finding) -> str:
    """A finding as one readable sentence: severity, what was found, and example rows."""
    parts = [f"{finding.severity.value.capitalize()}: {finding.detail}"]
    if finding.sensitive_columns:
        parts.append(f"Stands in for: {', '.join(finding.sensitive_columns)}.")
    shown = ", ".join(finding.columns[:8]) + (
        f" and {len(finding.columns) - 8} more" if len(finding.columns) > 8 else ""
    )
    parts.append(f"Columns: {shown}.")
    for side, rows in (
        ("train", finding.train_rows),
        ("test", finding.test_rows),
        (f"reference {finding.reference}", finding.reference_rows),
    ):
        if rows:
            more = "" if len(rows) <= _EXAMPLE_ROWS else " and more"
            listed = ", ".join(str(r) for r in rows[:_EXAMPLE_ROWS])
            parts.append(f"Example {side} rows: {listed}{more}.")
    return " ".join(parts)


def _text(sentence: str) -> RenderedStringTemplateContent:
    # "$" starts a parameter in GX string templates; findings carry none.
    return RenderedStringTemplateContent(
        content_block_type="string_template",
        string_template={"template": sentence.replace("$", "$$"), "params": {}},
    )


def leakage_expectations(
    config: CheckConfig, waivers: dict[FindingType, str]
) -> list[ExpectNoCriticalLeakageFinding]:
    encoded = config.model_dump_json()
    return [
        ExpectNoCriticalLeakageFinding(
            finding_type=kind, check_config=encoded, waived=waivers.get(kind)
        )
        for kind in FindingType
    ]


def findings_of(result: Any) -> list[Finding]:
    """The findings an ``ExpectNoCriticalLeakageFinding`` result carries."""
    return [Finding.model_validate(f) for f in result.result["details"]["findings"]]


def run_leakage_suite(
    context: Any,
    comparisons: dict[str, pd.DataFrame],
    config: CheckConfig,
    waivers: dict[FindingType, str],
) -> dict[str, list[tuple[Any, list[Finding]]]]:
    """Validate each stacked comparison (e.g. ``train_vs_test``) in ``context``.

    Returns, per comparison, each expectation's result with its findings.
    """
    source = context.data_sources.add_pandas("custodian_checks")
    suite = context.suites.add(gx.ExpectationSuite(name="leakage"))
    for expectation in leakage_expectations(config, waivers):
        suite.add_expectation(expectation)
    outcomes = {}
    for name, stacked in comparisons.items():
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("whole")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"leakage.{name}", data=batch, suite=suite)
        )
        result = definition.run(batch_parameters={"dataframe": stacked})
        outcomes[name] = [(r, findings_of(r)) for r in result.results]
    context.build_data_docs()
    offline_sites(context)
    return outcomes
