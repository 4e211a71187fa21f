"""torchrun worker for the gradient-parity test: every method in DDP over gloo, records per rank.

    torchrun --nproc-per-node 2 tests/distributed/parity_worker.py OUT_DIR [RUN ...]

A RUN is a method name (``barlow``), or ``NAME:uncorrected`` to train it with a gather that lacks
the world-size correction (the negative control). Each rank writes ``OUT_DIR/rank<r>.pt``: a dict
from RUN to the records of ``parity.run`` (gradients in full on rank 0, as digests on the others).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import parity  # noqa: E402

import methods.distributed  # noqa: E402
from bench.process_group import init_from_env, shutdown, wrap  # noqa: E402


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    runs = argv[1:] or list(parity.METHOD_NAMES)
    torch.set_num_threads(1)
    ctx = init_from_env(torch.device("cpu"))
    correct_gather = methods.distributed.gather
    records = {}
    try:
        for run_name in runs:
            name, _, variant = run_name.partition(":")
            if variant not in ("", "uncorrected"):
                raise SystemExit(f"unknown run variant {variant!r} in {run_name!r}; valid: uncorrected")
            methods.distributed.gather = (
                parity.gather_without_correction if variant == "uncorrected" else correct_gather
            )
            model = wrap(parity.build(name), ctx, sync_batchnorm=True)
            # Rank 0 keeps every gradient for the comparison; the others keep digests to show they agree.
            records[run_name] = parity.run(model, ctx.rank, ctx.world_size, full=ctx.rank == 0)
    finally:
        methods.distributed.gather = correct_gather
        shutdown()
    torch.save(records, out / f"rank{ctx.rank}.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
