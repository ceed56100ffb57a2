"""One DP step's Gaussian noise, side by side in one process: the secure sampler against
the samplers it is not allowed to be.

    .venv/bin/python bench/bench_noise.py [--draws 82946] [--rounds 7] [--calls 200]

``secure``: :class:`privacy.secure_gaussian.SecureGaussian` (ChaCha20 words, the compiled
ziggurat, float64, rounded once into a float32 buffer), and its two parts alone (the
keystream, and the ziggurat over words already drawn). References: torch's ``normal_``
(float32, not a CSPRNG, no tails past ~5.8 sigma) and numpy's ``Generator`` ziggurat over
PCG64 (compiled, float64, not a CSPRNG). Each variant's best round of ``calls`` calls,
rounds interleaved; the ratios are to ``secure``. The default size is the bench MLP's
(64-256-256-2).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from privacy.secure_gaussian import ChaChaStream, SecureGaussian
from privacy.ziggurat import fill_normals


def variants(draws: int) -> dict[str, Callable[[], object]]:
    out = np.empty(draws, dtype=np.float32)
    secure = SecureGaussian()
    stream = ChaChaStream()
    words = np.empty(draws + draws // 16 + 64, dtype=np.uint64)
    stream.read_into(memoryview(words).cast("B"))
    tensor = torch.empty(draws)
    generator = np.random.Generator(np.random.PCG64())
    out64 = np.empty(draws)
    return {
        "secure": lambda: secure.normal_into(out, 1.0),
        "secure_keystream_only": lambda: stream.read_into(memoryview(words).cast("B")),
        "secure_ziggurat_only": lambda: fill_normals(out, 1.0, words),
        "torch_normal_float32": lambda: tensor.normal_(),
        "numpy_pcg64_ziggurat": lambda: generator.standard_normal(out=out64),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=82_946)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    runs = variants(args.draws)
    for run in runs.values():  # warm-up: numba compiles, buffers are touched
        run()
    best = dict.fromkeys(runs, float("inf"))
    for round_ in range(args.rounds):
        for name in list(runs) if round_ % 2 == 0 else reversed(list(runs)):
            started = time.perf_counter()
            for _ in range(args.calls):
                runs[name]()
            best[name] = min(best[name], (time.perf_counter() - started) / args.calls)
    print(f"{args.draws:,} draws a call, best of {args.rounds} rounds of {args.calls} calls")
    for name, seconds in best.items():
        print(f"  {name:24s} {seconds * 1e3:7.3f} ms   {seconds / best['secure']:5.2f}x secure")


if __name__ == "__main__":
    main()
