"""Great Expectations: a schema suite per dataset, run in a file context, with Data Docs.

The suite is generated from the dataset's declared schema (its provenance
record), so the declaration is the single source of truth. Users may add
suites of their own to ``gx/expectations/`` named ``<dataset>.<anything>``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
import yaml

from governance.docs_offline import offline_sites
from governance.provenance import ColumnRole, ColumnSpec, ColumnType, Provenance

_NUMERIC_TYPES = ["int64", "Int64", "float64", "Float64"]
_BOOLEAN_TYPES = ["bool", "boolean"]


def schema_suite(record: Provenance) -> gx.ExpectationSuite:
    suite = gx.ExpectationSuite(name=f"{record.name}.schema")
    suite.add_expectation(
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=[c.name for c in record.columns])
    )
    suite.add_expectation(gxe.ExpectTableRowCountToEqual(value=record.rows))
    for column in record.columns:
        for expectation in _column_expectations(column):
            suite.add_expectation(expectation)
    identifier = record.column(ColumnRole.identifier)
    if identifier is not None:
        time = record.column(ColumnRole.time)
        suite.add_expectation(
            gxe.ExpectCompoundColumnsToBeUnique(column_list=[identifier, time])
            if time is not None
            else gxe.ExpectColumnValuesToBeUnique(column=identifier)
        )
    return suite


def _column_expectations(column: ColumnSpec) -> list[Any]:
    name = column.name
    found: list[Any] = []
    if not column.nullable:
        found.append(gxe.ExpectColumnValuesToNotBeNull(column=name))
    # GX 1.24's type-list check misfires on pandas 3's `str` dtype, so string
    # columns are checked by category only.
    if column.type in (ColumnType.integer, ColumnType.number):
        found.append(gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=_NUMERIC_TYPES))
    elif column.type is ColumnType.boolean:
        found.append(gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=_BOOLEAN_TYPES))
    if column.minimum is not None or column.maximum is not None:
        found.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=name, min_value=column.minimum, max_value=column.maximum
            )
        )
    if column.categories is not None:
        found.append(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=column.categories))
    return found


@dataclass(frozen=True)
class FailedExpectation:
    expectation: str
    column: str | None
    unexpected_count: int | None


@dataclass(frozen=True)
class SuiteOutcome:
    dataset: str
    suite: str
    success: bool
    evaluated: int
    successful: int
    failed: list[FailedExpectation]


def run_suites(
    template: Path,
    work_dir: Path,
    docs_dir: Path,
    datasets: list[tuple[Provenance, pd.DataFrame]],
) -> list[SuiteOutcome]:
    """Validate every dataset against its schema suite and any user suites.

    Runs in a copy of the ``template`` file context under ``work_dir`` and
    writes Data Docs to ``docs_dir``.
    """
    context = context_copy(template, work_dir, docs_dir)
    source = context.data_sources.add_pandas("custodian")
    validations = []
    frames: dict[str, pd.DataFrame] = {}
    for record, frame in datasets:
        batch = source.add_dataframe_asset(record.name).add_batch_definition_whole_dataframe(
            "whole"
        )
        frames[record.name] = frame
        user_suites = [s for s in context.suites.all() if s.name.startswith(f"{record.name}.")]
        for suite in [context.suites.add(schema_suite(record)), *user_suites]:
            validations.append(
                (
                    record.name,
                    context.validation_definitions.add(
                        gx.ValidationDefinition(name=suite.name, data=batch, suite=suite)
                    ),
                )
            )
    outcomes = []
    for dataset, definition in validations:
        result = definition.run(
            batch_parameters={"dataframe": frames[dataset]}, result_format="SUMMARY"
        )
        outcomes.append(_outcome(dataset, definition.suite.name, result))
    context.build_data_docs()
    offline_sites(context)
    return outcomes


def context_copy(template: Path, work_dir: Path, docs_dir: Path):
    """A file context copied from ``template`` into ``work_dir``, Data Docs at ``docs_dir``."""
    root = work_dir / "gx"
    shutil.copytree(template, root, ignore=shutil.ignore_patterns("uncommitted", "*.pyc"))
    config_path = root / "great_expectations.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    site = config["data_docs_sites"]["local_site"]["store_backend"]
    site["base_directory"] = str(docs_dir.resolve())
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    # GX logs progress bars and info lines; the CLI prints its own summary.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    return gx.get_context(mode="file", project_root_dir=str(work_dir))


def _outcome(dataset: str, suite: str, result: Any) -> SuiteOutcome:
    failed = [
        FailedExpectation(
            expectation=r.expectation_config.type,
            column=r.expectation_config.kwargs.get("column"),
            unexpected_count=(r.result or {}).get("unexpected_count"),
        )
        for r in result.results
        if not r.success
    ]
    stats = result.statistics
    return SuiteOutcome(
        dataset=dataset,
        suite=suite,
        success=bool(result.success),
        evaluated=int(stats["evaluated_expectations"]),
        successful=int(stats["successful_expectations"]),
        failed=failed,
    )
