"""DP training throughput side by side: ``custodian bench dp`` as a script.

    .venv/bin/python bench/bench_dp.py [--model 64-256-256-2|transformer|pipeline]
        [--batch-size 512] [--rounds 3] [--seconds 2] [--device cpu|cuda] [--no-memory] [--json]

See :mod:`training.dp_benchmark` for what each variant runs and how it is timed.
"""

from __future__ import annotations

import sys

from custodian.cli.main import main

if __name__ == "__main__":
    main(["bench", "dp", *sys.argv[1:]])
