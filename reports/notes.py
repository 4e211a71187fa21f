"""What a report leaves out and why: said on its title page and returned to the caller instead of failing."""

from __future__ import annotations

import pandas as pd

from reports.arms import Methods
from reports.collect import FINISHED, finished


def missing_notes(runs: pd.DataFrame, tests: pd.DataFrame, methods: Methods) -> list[str]:
    """What a fuller sweep would add."""
    notes = []
    ok = finished(runs)
    trained = methods.in_order(ok[~ok["reference"]]["method"])
    if len(trained) < 2:
        notes.append(
            f"Only {len(trained)} trained method(s) finished ({', '.join(map(methods.name, trained)) or 'none'}): "
            "no comparison between methods."
        )
    untagged = [m for m in methods.in_order(runs.loc[~runs["reference"], "method"]) if not methods.tagged(m)]
    baseline = methods.baseline_name
    if untagged:
        notes.append(
            f"Runs of {', '.join(untagged)} predate the method tags (method_display, method_order, "
            "method_baseline): they are shown under their method names and sorted after any tagged methods"
            + (", and no run names a baseline, so there are no paired tests." if methods.baseline is None else ".")
        )
    if methods.baseline is None:
        if not untagged:
            notes.append("No run names a baseline method (tag method_baseline): no paired tests.")
    elif methods.baseline not in trained:
        notes.append(
            f"No finished {baseline} runs: no paired tests against {baseline} and no check of its batch-size claim."
        )
    elif tests.empty and len(trained) >= 2:
        notes.append(f"{baseline} never ran at the same dataset and batch size as another method: no paired tests.")
    if ok["batch_size"].nunique() < 2:
        notes.append("A single batch size: batch-size sensitivity is not assessed.")
    if not ok.empty and ok.groupby(["setting", "batch_size", "method"])["seed"].nunique().max() < 3:
        notes.append("Fewer than 3 seeds in every cell: spreads and intervals are rough (cells marked †).")
    if not (ok["variant"] != "").any():
        notes.append("No runs differ in method options: no hierarchy ablation table.")
    failed = runs[runs["status"] != FINISHED]
    if len(failed):
        notes.append(f"{len(failed)} run(s) did not finish and are listed in 'Runs not in the statistics'.")
    return notes
