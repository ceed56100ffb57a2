"""The ``custodian`` command line: one sub-command per stage and per review action.

Library code raises typed errors; this module alone turns them into one line
on stderr and an exit code (0 success, 1 a check or gate failed, 2 bad usage
or input). ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence

import click

from audits.errors import AuditError
from audits.files import UnsafeReplacement
from audits.keys import SigningKeyError
from audits.log import CheckpointFormatError, NoTrustedKeys
from custodian.services import trail
from governance.errors import CheckFailed, GovernanceError, InputError, PolicyViolation
from privacy.errors import (
    BudgetExceeded,
    EncryptionInputError,
    PrivacyError,
    PrivacyInputError,
    TamperedCiphertext,
)
from stores.errors import StoreError, StoreUnavailable, UnsafeStoreFile
from training.errors import TrainingError, TrainingInputError

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2

# Most specific class first; the first match decides the exit code.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (InputError, EXIT_BAD_INPUT),
    (PrivacyInputError, EXIT_BAD_INPUT),
    # A missing, malformed or wrong data key, or a file that is not ciphertext.
    (EncryptionInputError, EXIT_BAD_INPUT),
    (TrainingInputError, EXIT_BAD_INPUT),
    (CheckpointFormatError, EXIT_BAD_INPUT),
    (NoTrustedKeys, EXIT_BAD_INPUT),
    (SigningKeyError, EXIT_BAD_INPUT),
    (UnsafeReplacement, EXIT_BAD_INPUT),
    # A store file that is a link, a FIFO, a directory or someone else's: refused, exit 2.
    (UnsafeStoreFile, EXIT_BAD_INPUT),
    # The store's server unreachable or gone: nothing was confirmed; fix the setup, rerun.
    (StoreUnavailable, EXIT_BAD_INPUT),
    (PolicyViolation, EXIT_CHECK_FAILED),
    (CheckFailed, EXIT_CHECK_FAILED),
    (BudgetExceeded, EXIT_CHECK_FAILED),
    # Ciphertext that fails authentication is an integrity check that failed,
    # like a hash mismatch at ingest or a broken audit log: exit 1.
    (TamperedCiphertext, EXIT_CHECK_FAILED),
    (GovernanceError, EXIT_CHECK_FAILED),
    (PrivacyError, EXIT_CHECK_FAILED),
    (TrainingError, EXIT_CHECK_FAILED),
    (AuditError, EXIT_CHECK_FAILED),
    (StoreError, EXIT_CHECK_FAILED),
    (OSError, EXIT_BAD_INPUT),
)
HANDLED = tuple(cls for cls, _ in EXIT_CODES)


# Sub-command -> "module:attribute". Commands are imported only when invoked:
# Great Expectations and torch take seconds to import, and most commands need
# neither.
COMMANDS = {
    "data": "custodian.cli.data:data",
    "ingest": "custodian.cli.ingest:ingest_command",
    "validate": "custodian.cli.validate:validate_command",
    "split": "custodian.cli.split:split_command",
    "check": "custodian.cli.check:check_command",
    "check-large": "custodian.cli.check_large:check_large_command",
    "train": "custodian.cli.train:train_command",
    "plan": "custodian.cli.plan:plan_command",
    "privacy": "custodian.cli.privacy:privacy_group",
    "evaluate": "custodian.cli.evaluate:evaluate_command",
    "experiments": "custodian.cli.experiments:experiments",
    "audit": "custodian.cli.audit:audit",
    "keys": "custodian.cli.keys:keys",
    "trust": "custodian.cli.trust:trust",
    "manifest": "custodian.cli.manifest:manifest_command",
    "verify": "custodian.cli.verify:verify",
    "bench": "custodian.cli.bench:bench",
    "signoff": "custodian.cli.signoff:signoff_command",
    "attest": "custodian.cli.attest:attest_command",
    "release": "custodian.cli.release:release",
    "report": "custodian.cli.report:report_command",
    "store": "custodian.cli.store:store",
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
def cli(debug: bool) -> None:
    """Custodian: governed datasets, private training, signed evidence."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def exit_code_for(error: BaseException) -> int:
    return next(code for cls, code in EXIT_CODES if isinstance(error, cls))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    try:
        with trail.recording(args, command_path(cli, args), _is_refusal) as recorded:
            returned = cli.main(args=args, prog_name="custodian", standalone_mode=False)
            if recorded is not None and isinstance(returned, int):
                recorded.exit_code = returned
    except click.ClickException as err:
        click.echo(f"custodian: error: {_click_line(err)}", err=True)
        sys.exit(EXIT_BAD_INPUT if isinstance(err, click.UsageError) else err.exit_code)
    except click.Abort:
        click.echo("custodian: aborted", err=True)
        sys.exit(EXIT_CHECK_FAILED)
    except HANDLED as err:
        if "--debug" in args:
            raise
        click.echo(f"custodian: error: {_one_line(err)}", err=True)
        sys.exit(exit_code_for(err))
    # Without standalone mode click returns the code of an explicit ctx.exit().
    sys.exit(returned if isinstance(returned, int) else 0)


def command_path(group: click.Group, argv: Sequence[str]) -> tuple[str, ...] | None:
    """The sub-command names ``argv`` selects, e.g. ``("audit", "show")``; None if no command.

    Options before a sub-command are skipped: Custodian's groups take only flags
    (``--debug``, ``--help``), never options with a value.
    """
    names: list[str] = []
    command: click.Command = group
    for token in argv:
        if not isinstance(command, click.Group):
            break
        if token.startswith("-"):
            continue
        sub = command.get_command(click.Context(command), token)
        if sub is None:
            return None
        names.append(token)
        command = sub
    if not names or isinstance(command, click.Group):
        return None
    return tuple(names)


def _is_refusal(err: BaseException) -> bool:
    """A check, policy or budget said no (exit 1), as opposed to a failure."""
    return isinstance(err, HANDLED) and exit_code_for(err) == EXIT_CHECK_FAILED


def _click_line(err: click.ClickException) -> str:
    """Click's usage error as one line: the command, the problem, where help is."""
    context = getattr(err, "ctx", None)
    if context is None:
        return _one_line(err)
    return f"{context.command_path}: {_one_line(err)} (see '{context.command_path} --help')"


def _one_line(err: BaseException) -> str:
    text = err.format_message() if isinstance(err, click.ClickException) else str(err)
    return " ".join(text.split()) or err.__class__.__name__


if __name__ == "__main__":
    main()
