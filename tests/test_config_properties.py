"""Every value of every config field and sweep axis, from YAML and from ``--set``, either plans runs or is
refused before anything is written: exit 2, one line on stderr, no traceback, no store, lock or
checkpoint. Hypothesis draws the values; ``bench run --dry-run`` resolves and validates the sweep
exactly as a real run does (data included) and stops before the store.

Covered: every field of the data, model, optim, train, eval and views sections, every option of every
method under ``method_options``, ``method_optim`` values and method names, the sweep axes (methods,
datasets, batch_sizes, seeds), device, ablation and ablation_variants, and unknown keys at each level.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli import main
from bench.schema import SECTIONS
from methods import METHODS, get_method

PROFILE_EXAMPLES = int(os.environ.get("BENCH_PROPERTY_EXAMPLES", "60"))
SMALL_DATA = {
    "methods": ["simclr"],
    "data": {"image_size": 32, "synthetic_sizes": [24, 8, 8]},
    "train": {"epochs": 1, "batch_size": 8},
}

FIELDS = [(name, f.name) for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
METHOD_FIELDS = [
    (method, f.name)
    for method in METHODS
    if not get_method(method).parts
    for f in dataclasses.fields(get_method(method).config_class)
]

numbers = st.one_of(
    st.integers(min_value=-3, max_value=300),
    st.sampled_from([0, 1, 2, 2**31, 2**63, -(2**63), 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.5, 32.9, 1e-3, -1e-3, 1.0e400]),
)
texts = st.one_of(st.text(max_size=8), st.sampled_from(["", "auto", "sgd", "1e-3", ".nan", "-.inf", "1.0e+400"]))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(texts, scalars, max_size=2))


def _yaml_text(value: object) -> str:
    """How a user would write ``value`` on the command line (YAML, as ``--set`` reads it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


@st.composite
def overrides(draw) -> tuple[tuple[str, ...], object]:
    """One (path, value): a config field, a method option, a method_optim value, a sweep axis or an
    unknown key, set to anything."""
    kind = draw(st.sampled_from(["field", "method_option", "method_optim", "axis", "top", "unknown"]))
    value = draw(values)
    if kind == "field":
        section, key = draw(st.sampled_from(FIELDS))
        return (section, key), value
    if kind == "method_option":
        method, key = draw(st.sampled_from(METHOD_FIELDS + [("byl", "tau_base"), ("simclr", "temperatur")]))
        return ("method_options", method, key), value
    if kind == "method_optim":
        method = draw(st.sampled_from([*METHODS, "byl"]))
        key = draw(st.sampled_from(["lr", "momentum", "weight_decay", "name", "warmup_epochs", "lrr"]))
        return ("method_optim", method, key), value
    if kind == "axis":
        axis = draw(st.sampled_from(["methods", "datasets", "batch_sizes", "seeds"]))
        return (axis,), draw(st.one_of(values, st.lists(scalars, min_size=1, max_size=3)))
    if kind == "top":
        key = draw(st.sampled_from(["device", "ablation", "ablation_variants", "method_options", "method_optim"]))
        return (key,), value
    return (draw(st.sampled_from(["datta", "train", "method_options"])), "no_such_key"), value


def _nested(path: tuple[str, ...], value: object) -> dict:
    tree: dict = {}
    node = tree
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return tree


def _nothing_written(folder: Path) -> bool:
    return not any((folder / name).exists() for name in ("mlruns", ".bench-state", "mlflow.db"))


def _check(code: int, err: str, folder: Path) -> None:
    assert code in (0, 2), f"exit {code}: {err}"
    assert "Traceback" not in err, err
    assert _nothing_written(folder)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("bench: error: "), err


pytestmark = pytest.mark.filterwarnings("ignore")
PROPERTY = settings(
    max_examples=PROFILE_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(item=overrides())
def test_any_value_in_a_config_file_plans_or_is_refused_cleanly(item, tmp_path_factory, monkeypatch, capsys):
    folder = tmp_path_factory.mktemp("yaml")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(folder / "cache"))
    path, value = item
    config = folder / "sweep.yaml"
    tree = _nested(path, value)
    base = {k: v for k, v in SMALL_DATA.items() if k not in tree}
    config.write_text(yaml.safe_dump({**base, **tree}))
    code = main(["run", "--dry-run", "--preset", "smoke", "--config", str(config)])
    _check(code, capsys.readouterr().err, folder)


@PROPERTY
@given(item=overrides())
def test_any_value_given_with_set_plans_or_is_refused_cleanly(item, tmp_path_factory, monkeypatch, capsys):
    folder = tmp_path_factory.mktemp("set")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(folder / "cache"))
    path, value = item
    small = [f"--set={'.'.join(p)}={_yaml_text(v)}" for p, v in _flat(SMALL_DATA) if p[0] != path[0]]
    argv = ["run", "--dry-run", "--preset", "smoke", *small]
    code = main([*argv, f"--set={'.'.join(path)}={_yaml_text(value)}"])
    _check(code, capsys.readouterr().err, folder)


def _flat(tree: dict, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    items: list[tuple[tuple[str, ...], object]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            items += _flat(value, (*prefix, key))
        else:
            items.append(((*prefix, key), value))
    return items


def test_the_base_sweep_plans_so_the_properties_above_are_not_vacuous(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(SMALL_DATA))
    assert main(["run", "--dry-run", "--preset", "smoke", "--config", str(config)]) == 0
    assert "1 run(s) planned" in capsys.readouterr().out
    assert _nothing_written(tmp_path)
