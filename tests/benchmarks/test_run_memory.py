"""Peak resident memory of a real cpu-preset run on ISIC 2017: at most 3 GiB, with the decoded images
in an on-disk memmap rather than loaded whole into RAM.

One ``python -m bench run --methods fgssl --dataset isic2017 --preset cpu --epochs 1`` subprocess (FG-SSL
is the heaviest method: three blocks and four optimizer steps per batch), one torch thread like the rest
of the suite, with a fresh cache folder so the run also decodes the JPEGs (its decode workers count
too). One thread also keeps the run inside the suite's budget: with two, the linear probe's OpenBLAS
threads and torch's OpenMP threads contend for the two cores and the probe takes over a minute
instead of about a second. The peak is the
larger of the kernel's high-water mark for the run (``wait4``) and the largest sum of RSS over its
process tree sampled from /proc every 0.2 s. The same samples read /proc/<pid>/maps: the train split's
cache file must be memory-mapped, which is what "on disk, not loaded whole into RAM" means here.

Skipped, saying why, when the real data is absent (``$BENCH_SHARED_DATA`` overrides the location).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from child_runs import bench_command, child_env, run_child

MAX_PEAK_GIB = 3.0
GIB = 1024**3


def test_cpu_preset_run_peak_memory(ratio_bench, shared_data, tmp_path) -> None:
    root = shared_data / "isic2017"
    if not (root / "ISIC-2017_Training_Part3_GroundTruth.csv").is_file():
        pytest.skip(f"ISIC 2017 not found under {root}; set BENCH_SHARED_DATA to the folder that holds isic2017/")
    cache = tmp_path / "cache"
    argv = bench_command(
        "run",
        *("--methods", "fgssl", "--dataset", "isic2017", "--preset", "cpu", "--epochs", "1"),
        *("--data-root", str(root), "--cache-dir", str(cache), "--no-progress"),
        *("--tracking-uri", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"),
    )
    runs = []
    ratio_bench.record(
        lambda: runs.append(
            run_child(argv, cwd=tmp_path, env=child_env(tmp_path, threads=1), timeout=1200, map_filter=str(cache))
        ),
        rounds=1,
        warmup=0,
    )
    run = runs[0].check()
    # the decoder writes through a memmap of a ".partial" file too; reading is the finished file's map
    caches = sorted(Path(path).name for path in run.mapped if ".partial" not in Path(path).name)
    epochs = [line for line in run.stderr.splitlines() if " epoch 1/1:" in line]
    cache_bytes = sum(p.stat().st_size for p in cache.glob("*.npy"))
    peak = run.tree_rss_peak / GIB
    ratio_bench.report_value(
        "peak RSS, cpu preset fgssl run on isic2017 (1 epoch)",
        peak,
        "GiB",
        f"<= {MAX_PEAK_GIB}",
        f"main process high-water mark {run.max_rss / GIB:.2f} GiB, wall {run.wall:.0f} s "
        f"({epochs[-1].split(': ', 1)[-1] if epochs else 'no epoch line'}); "
        f"decoded cache {cache_bytes / 2**20:.0f} MiB on disk, memory-mapped: {', '.join(caches) or 'none'}",
        peak_gib=peak,
        main_process_peak_gib=run.max_rss / GIB,
        cache_mib=cache_bytes / 2**20,
        wall_seconds=run.wall,
    )
    assert any(name.startswith("isic2017-train-") for name in caches), "the train split was not read from a memmap"
    assert peak <= MAX_PEAK_GIB
