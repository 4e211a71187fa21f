"""The layout is the architecture: bench on top; methods, datasets and reports never import each other."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOWER = ("methods", "datasets", "reports")


def imported_packages(path: Path) -> set[str]:
    """Top-level names a module imports, including imports inside functions (static, so nothing runs)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", LOWER)
def test_lower_packages_import_neither_each_other_nor_bench(package):
    forbidden = {"bench", *LOWER} - {package}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_packages(path) & forbidden
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


PACKAGES = ("bench", "methods", "datasets", "reports")
MAX_LINES = 400


def _modules(*packages: str) -> list[Path]:
    return sorted(path for package in packages for path in (ROOT / package).rglob("*.py"))


def test_no_module_is_longer_than_the_limit():
    lines = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in _modules(*PACKAGES)}
    long = {path: n for path, n in lines.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_ssl_method_is_named_outside_methods():
    """A method carries all its parts: bench, datasets and reports learn about methods from the registry
    (or, in reports, from run tags), so adding one touches methods/ alone."""
    from methods import METHOD_SETS, METHODS

    names = set(METHODS) | {name for members in METHOD_SETS.values() for name in members}
    found = []
    for path in _modules("bench", "datasets", "reports"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not found, "SSL method names as string literals: " + ", ".join(found)


def test_the_config_schema_imports_nothing_of_the_project():
    assert not imported_packages(ROOT / "bench" / "schema.py") & set(PACKAGES)


def test_no_confusable_module_names():
    """``bench/distributed.py`` (launching) beside ``methods/distributed.py`` (in-step collectives), and
    ``reports/table.py`` beside ``reports/tables.py``, made every import ambiguous to read."""
    stems = {package: {p.stem for p in (ROOT / package).rglob("*.py")} - {"__init__"} for package in PACKAGES}
    assert not stems["bench"] & stems["methods"], "bench/ and methods/ share module names"
    plurals = {f"{package}/{s}" for package, names in stems.items() for s in names if s + "s" in names}
    assert not plurals, f"modules named like their plural: {sorted(plurals)}"


def test_every_page_the_readme_and_docs_link_exists():
    """A user follows the README's links first: a renamed or missing docs page is a dead end."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not missing, f"dead links: {missing}"
