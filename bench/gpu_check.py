"""``make gpu-check``: every CUDA path and the device benchmark in one short run.

    .venv/bin/python bench/gpu_check.py SUMMARY.json [--dry-run] [--budget 470]

Four parts, in order, each a real command in its own process with a time limit taken
from what is left of ``--budget`` seconds (470: sized for under 8 minutes on one H100,
an estimate until it has run on one):

``cuda_tests``
    ``pytest -m cuda``: fp16 loss scaling, bf16 autocast, the fast engine against Opacus
    hooks and the per-sample clipping bounds, all on the device. Passes if every test
    passed and none was skipped.
``bench``
    ``custodian bench dp --device cuda --json`` on the default MLP, a large MLP
    (1024-4096-4096-2) and a small transformer encoder, in fp32, bf16 and fp16. Judged by
    :data:`TARGETS` on every workload.
``train_stage``
    ``dvc repro train`` in a scratch project (the committed tree, as the tests build
    it) with ``train.device: cuda``, one epoch in each precision; checks
    ``reports/privacy.json`` and that the privacy ledger charged exactly that run.
``replicas``
    the same with ``train.world_size: 2`` (nccl) when two CUDA devices are visible;
    skipped, and said so, on one.

The JSON summary (format in the README, *GPU check*) is rewritten after every part, so a
run cut short still leaves what it measured. Exit status: 0 every part and target
passed; 1 one did not; 2 no CUDA device (one line on stderr) or bad arguments.

``--dry-run`` needs no GPU: it collects the CUDA tests, runs the default bench on CPU at
a tiny size (the summary's figures and targets are computed, not judged), builds the
scratch project and checks every precision's params against the stage's typed params
model and ``dvc status train``. The test suite runs it, so the check cannot rot unseen.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from custodian.params import TrainParams, load_section  # noqa: E402
from custodian.project import Project  # noqa: E402
from privacy.ledger import PrivacyLedger  # noqa: E402
from tests.conftest import BIN, make_project, project_env  # noqa: E402

FORMAT = "custodian-gpu-check/v1"
PRECISIONS = ("fp32", "bf16", "fp16")
# fp16 runs on CUDA only: on CPU the bench refuses it, so a dry run benches the others.
CPU_VARIANTS = ("nonprivate_fp32", "fast_fp32", "nonprivate_bf16", "fast_bf16")
DEVICE_VARIANTS = (
    "nonprivate_fp32",
    "fast_fp32",
    "opacus_ghost_fp32",
    "nonprivate_bf16",
    "fast_bf16",
    "nonprivate_fp16",
    "fast_fp16",
)


@dataclass(frozen=True, slots=True)
class BenchWorkload:
    """One ``custodian bench dp`` run: its name in the summary and its arguments."""

    name: str
    model: str
    rows: int
    batch_size: int
    variants: tuple[str, ...] = DEVICE_VARIANTS


WORKLOADS = (
    BenchWorkload(
        "mlp-64-256-256-2", "64-256-256-2", 50_000, 512, ("opacus_hooks_fp32", *DEVICE_VARIANTS)
    ),
    # Opacus hooks would hold 256 per-sample copies of 21M parameters (21 GB): ghost only.
    BenchWorkload("mlp-1024-4096-4096-2", "1024-4096-4096-2", 20_000, 256),
    BenchWorkload("transformer", "transformer", 20_000, 256),
)


_COMPARISONS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True, slots=True)
class Target:
    """A goal every benched workload must meet on the GPU."""

    metric: str
    op: str  # a key of _COMPARISONS
    threshold: float

    def judge(self, value: float) -> bool:
        return _COMPARISONS[self.op](value, self.threshold)


TARGETS = (
    Target("fast_bf16/nonprivate_bf16", ">=", 0.8),
    Target("fast_fp32/nonprivate_fp32", ">=", 0.9),
    Target("max_rel_error_vs_opacus", "<=", 1e-4),
)


@dataclass(slots=True)
class Check:
    """What every part gets: where to work, how long it may take, dry or not."""

    dry_run: bool
    work: Path
    deadline: float
    env: dict[str, str]
    project: Path | None = None
    bench: dict[str, dict[str, object]] = field(default_factory=dict)

    def seconds_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def run(self, args: list[str], cwd: Path, limit: float) -> subprocess.CompletedProcess[str]:
        """``args`` in ``cwd``, killed after ``limit`` seconds or the budget, whichever first.

        The command runs in its own process group, and a timeout kills the whole group:
        ``dvc repro`` leaves no ``custodian train`` (or nccl follower) behind on the GPU.
        """
        timeout = min(limit, self.seconds_left())
        if timeout < 5:
            raise PartTimeout(f"no time left in the budget for: {' '.join(args[:4])}")
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise PartTimeout(f"{' '.join(args[:4])} ran past {timeout:.0f} s") from None
        return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


class PartFailed(Exception):
    """A part ran and found something wrong: the message says what."""


class PartTimeout(PartFailed):
    """A part ran out of its time."""


def cuda_tests(check: Check) -> dict[str, object]:
    base = [str(BIN / "python"), "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider"]
    if check.dry_run:
        done = check.run([*base, "--collect-only", "-q"], ROOT, 180)
        tests = [line for line in done.stdout.splitlines() if "::" in line]
        if done.returncode != 0 or not tests:
            raise PartFailed(f"collecting the CUDA tests failed: {_tail(done)}")
        return {"status": "planned", "collected": len(tests), "tests": tests}
    report = check.work / "cuda-tests.xml"
    done = check.run([*base, "-q", f"--junitxml={report}"], ROOT, 240)
    counts = _junit_counts(report) if report.is_file() else {}
    result = {"status": "passed", **counts}
    failed = counts.get("failures", []) or counts.get("errors", 0)
    if done.returncode != 0 or failed or counts.get("skipped", 0) or not counts.get("tests"):
        result["status"] = "failed"
        result["output_tail"] = _tail(done)
    return result


def _junit_counts(report: Path) -> dict[str, object]:
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    cases = suite.findall("testcase") if suite is not None else []
    failures = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in cases
        if case.find("failure") is not None or case.find("error") is not None
    ]
    skipped = [case for case in cases if case.find("skipped") is not None]
    return {
        "tests": len(cases),
        "passed": len(cases) - len(failures) - len(skipped),
        "skipped": len(skipped),
        "errors": 0 if suite is None else int(suite.get("errors", 0)),
        "failures": failures,
    }


def bench(check: Check) -> dict[str, object]:
    figures = check.bench
    planned: dict[str, list[str]] = {}
    for workload in WORKLOADS:
        args = bench_args(workload, dry_run=check.dry_run)
        if check.dry_run and workload is not WORKLOADS[0]:
            planned[workload.name] = bench_args(workload, dry_run=False)
            continue
        done = check.run(args, ROOT, 150)
        if done.returncode != 0:
            raise PartFailed(f"bench {workload.name} exited {done.returncode}: {_tail(done)}")
        report = json.loads(done.stdout)
        # The noise is drawn once per step: its share of a fast fp32 step's time.
        step_ms = 1000 * workload_batch(workload, check.dry_run) / report["fast_fp32"]
        report["noise_share_of_fast_fp32_step"] = report["noise_ms_per_step"] / step_ms
        figures[workload.name] = report
    result: dict[str, object] = {"status": "passed", "workloads": figures}
    if planned:
        result["planned"] = planned
    return result


# A dry run benches at this size, on CPU: (rows, expected batch).
_DRY_SIZE = (2_000, 64)


def workload_batch(workload: BenchWorkload, dry_run: bool) -> int:
    return _DRY_SIZE[1] if dry_run else workload.batch_size


def bench_args(workload: BenchWorkload, *, dry_run: bool) -> list[str]:
    """The ``custodian bench dp`` command line; a dry run's is tiny and on CPU."""
    rows, batch, rounds, seconds, device = (
        (*_DRY_SIZE, "1", "0.2", "cpu")
        if dry_run
        else (workload.rows, workload.batch_size, "3", "1.0", "cuda")
    )
    variants = CPU_VARIANTS if dry_run else workload.variants
    args = [str(BIN / "custodian"), "bench", "dp", "--device", device, "--json", "--no-memory"]
    args += ["--model", workload.model, "--rows", str(rows), "--batch-size", str(batch)]
    args += ["--rounds", rounds, "--seconds", seconds]
    for variant in variants:
        args += ["--variant", variant]
    return args


def judge_targets(figures: dict[str, dict[str, object]]) -> list[dict[str, object]]:
    """Each target on each benched workload: its value and whether it meets the threshold."""
    judged = []
    for name, report in figures.items():
        ratios = report.get("ratios", {})
        values = {**report, **(ratios if isinstance(ratios, dict) else {})}
        for target in TARGETS:
            value = values.get(target.metric)
            judged.append(
                {
                    "workload": name,
                    "metric": target.metric,
                    "value": value,
                    "op": target.op,
                    "threshold": target.threshold,
                    "passed": isinstance(value, int | float) and target.judge(float(value)),
                }
            )
    return judged


def train_stage(check: Check) -> dict[str, object]:
    project = _scratch_project(check)
    runs: dict[str, object] = {}
    for precision in PRECISIONS:
        _set_train_params(project, device="cuda", precision=precision, world_size=1)
        if check.dry_run:
            runs[precision] = _planned_train(check, project)
            continue
        runs[precision] = _train_and_verify(check, project, precision, world_size=1)
    return {"status": "planned" if check.dry_run else "passed", "runs": runs}


def replicas(check: Check) -> dict[str, object]:
    devices = torch.cuda.device_count()
    if not check.dry_run and devices < 2:
        return {
            "status": "skipped",
            "reason": f"{devices} CUDA device visible; nccl replicas need 2",
        }
    project = _scratch_project(check)
    _set_train_params(project, device="cuda", precision="bf16", world_size=2)
    if check.dry_run:
        return {"status": "planned", "run": _planned_train(check, project)}
    run = _train_and_verify(check, project, "bf16", world_size=2)
    return {"status": "passed", "run": run}


def _scratch_project(check: Check) -> Path:
    """One scratch project for every run, with lifetime budget for all of them."""
    if check.project is None:
        check.project = make_project(check.work / "project")
        path = check.project / "params.yaml"
        params = yaml.safe_load(path.read_text())
        params["privacy"]["lifetime_epsilon"] = 100.0
        path.write_text(yaml.safe_dump(params, sort_keys=False))
    return check.project


def _set_train_params(project: Path, *, device: str, precision: str, world_size: int) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["train"].update(device=device, precision=precision, world_size=world_size, epochs=1)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _planned_train(check: Check, project: Path) -> dict[str, object]:
    """The params load through the stage's own typed model, and DVC sees them as changed
    params of the train stage (so ``dvc repro train`` would rerun it with them)."""
    params = load_section(TrainParams, "train", project / "params.yaml")
    done = check.run([str(BIN / "dvc"), "status", "train"], project, 120)
    if done.returncode != 0 or "params.yaml" not in done.stdout:
        raise PartFailed(f"dvc status train: {_tail(done)}")
    return {"params": params.model_dump(include={"device", "precision", "world_size", "epochs"})}


def _train_and_verify(
    check: Check, project: Path, precision: str, *, world_size: int
) -> dict[str, object]:
    before = _ledger_runs(project)
    started = time.monotonic()
    done = check.run([str(BIN / "dvc"), "repro", "train"], project, 300)
    if done.returncode != 0:
        raise PartFailed(f"dvc repro train ({precision}) exited {done.returncode}: {_tail(done)}")
    report = json.loads((project / "reports" / "privacy.json").read_text())
    after = _ledger_runs(project)
    new = {run: steps for run, steps in after.items() if run not in before}
    problems = []
    if report.get("precision") != precision:
        problems.append(f"privacy.json precision {report.get('precision')!r}")
    if report.get("world_size", 1) != world_size:
        problems.append(f"privacy.json world_size {report.get('world_size')!r}")
    if not 0 < report["epsilon"] <= report["target_epsilon"] + 1e-9:
        problems.append(f"epsilon {report['epsilon']} outside (0, {report['target_epsilon']}]")
    if list(new.values()) != [report["steps"]]:
        problems.append(f"ledger charged {new} for one run of {report['steps']} steps")
    if problems:
        raise PartFailed(f"train {precision}: " + "; ".join(problems))
    return {
        "seconds": round(time.monotonic() - started, 1),
        "epsilon": report["epsilon"],
        "steps": report["steps"],
        "ledger_steps": next(iter(new.values())),
    }


def _ledger_runs(project: Path) -> dict[str, int]:
    path = Project(project).privacy_ledger_path
    if not path.exists():
        return {}
    return {run.run_id: run.steps for spend in PrivacyLedger(path).summary() for run in spend.runs}


PARTS: tuple[tuple[str, Callable[[Check], dict[str, object]]], ...] = (
    ("cuda_tests", cuda_tests),
    ("bench", bench),
    ("train_stage", train_stage),
    ("replicas", replicas),
)


def environment() -> dict[str, object]:
    cuda = torch.cuda.is_available()
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "device_count": torch.cuda.device_count() if cuda else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(),
        "commit": commit or None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("summary", type=Path, help="where to write the JSON summary")
    parser.add_argument("--dry-run", action="store_true", help="plan and check on CPU")
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for all parts")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        build = torch.version.cuda or "none (a CPU-only build)"
        print(
            f"gpu-check: no CUDA device visible to torch {torch.__version__} (CUDA: {build}); "
            "--dry-run checks the plan on CPU",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    parts: dict[str, dict[str, object]] = {}
    summary: dict[str, object] = {
        "format": FORMAT,
        "mode": "dry-run" if args.dry_run else "gpu",
        "passed": False,
        "seconds": 0.0,
        "environment": environment(),
        "parts": parts,
        # Computed in a dry run too (from CPU figures) but only judged on a GPU.
        "targets_judged": not args.dry_run,
        "targets": [],
    }
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        env = project_env()
        env["CUSTODIAN_HOME"] = str(Path(work) / "home")  # keys of the scratch runs only
        env.pop("DVC_STAGE", None)
        check = Check(args.dry_run, Path(work), started + args.budget, env)
        for name, part in PARTS:
            began = time.monotonic()
            try:
                parts[name] = part(check)
            except PartTimeout as err:
                parts[name] = {"status": "timeout", "error": str(err)}
            except PartFailed as err:
                parts[name] = {"status": "failed", "error": str(err)}
            parts[name]["seconds"] = round(time.monotonic() - began, 1)
            print(f"gpu-check: {name}: {parts[name]['status']}", file=sys.stderr)
            targets = judge_targets(check.bench)
            summary.update(
                targets=targets,
                passed=_passed(parts, targets, judged=not args.dry_run),
                seconds=round(time.monotonic() - started, 1),
            )
            _write_atomic(args.summary, summary)
    return 0 if summary["passed"] else 1


def _passed(
    parts: dict[str, dict[str, object]], targets: list[dict[str, object]], *, judged: bool
) -> bool:
    """Dry run: every part planned or ran. On a GPU: every part passed (replicas may be
    skipped on one device) and every target met."""
    statuses = {part["status"] for part in parts.values()}
    if not judged:
        return statuses <= {"planned", "passed"}
    return statuses <= {"passed", "skipped"} and all(t["passed"] for t in targets)


def _write_atomic(path: Path, summary: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(temporary, path)


def _tail(done: subprocess.CompletedProcess[str], lines: int = 15) -> str:
    return "\n".join((done.stdout + done.stderr).strip().splitlines()[-lines:])


if __name__ == "__main__":
    sys.exit(main())
