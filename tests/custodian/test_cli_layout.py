"""The command line stays thin: short functions, one place that maps errors to exit codes."""

from __future__ import annotations

import ast

import pytest

from custodian.cli.main import COMMANDS
from tests.conftest import ROOT

CLI = ROOT / "custodian/cli"
LIMIT = 40


def functions(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


@pytest.mark.parametrize("path", sorted(CLI.glob("*.py")), ids=lambda p: p.name)
def test_no_cli_function_is_over_40_lines(path) -> None:
    # From ``def`` to the last line (the option decorators above it are declarations).
    long = {f.name: f.end_lineno - f.lineno + 1 for f in functions(path)}
    assert {name: n for name, n in long.items() if n > LIMIT} == {}


def test_every_command_lives_in_its_own_cli_module() -> None:
    modules = {target.partition(":")[0] for target in COMMANDS.values()}
    assert all(module.startswith("custodian.cli.") for module in modules)
    assert {f"custodian.cli.{p.stem}" for p in CLI.glob("*.py")} - modules == {
        "custodian.cli.__init__",
        "custodian.cli.main",
    }
