"""The documentation's own contracts: README's links and length, and the references the docs build renders
from the code (the examples themselves run through Sybil, see conftest.py; the site's links through
``mkdocs build --strict`` in .ci/run)."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path
from types import ModuleType

from aiotasks import _cli, _metrics, _scripts

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: Relative Markdown links and images: ](path) or ](path#anchor), not http(s) nor a bare anchor.
LOCAL_LINK = re.compile(r"\]\((?!https?://|#)([^)#\s]+)(?:#[^)]*)?\)")


def hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks" / "generated.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_one_screen_and_its_links_resolve() -> None:
    """README.md stays within 200 lines, and every relative link in it names a file of the repository
    (the docs site checks its own links; nothing checks README's but this). A commented-out link, such
    as the console screenshot's before it lands, is not a link."""
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    shown = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    targets = LOCAL_LINK.findall(shown)
    assert targets, "README links into the docs"
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert not missing, missing


def test_cli_reference_renders_every_subcommand_from_the_parser() -> None:
    """The CLI page is made from ``_cli._parser()`` at build time: one section per subcommand, holding
    that subcommand's own usage line and every option it takes, so a new option can't be missed."""
    page = hooks()._cli_reference()
    parser = _cli._parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert subparsers.choices
    for name, sub in subparsers.choices.items():
        assert f"`aiotasks {name}`" in page or f"`{name}`" in page  # a command, or an alias of one
        assert f"usage: {sub.prog}" in page
        for action in sub._actions:
            for option in action.option_strings:
                assert option in page, (name, option)


def test_scripts_reference_shows_each_scripts_contract() -> None:
    """The scripts page lists every Lua script of ``_scripts`` with its KEYS/ARGV/return header (the
    contract the module's docstring promises each script carries) and its SHA1."""
    page = hooks()._scripts_reference()
    scripts = [getattr(_scripts, name) for name in _scripts.__all__]
    scripts = [script for script in scripts if isinstance(script, _scripts.Script)]
    assert scripts
    for script in scripts:
        header = hooks()._script_header(script.source)
        assert header.startswith("-- KEYS"), script.name
        assert "-- return" in header, script.name
        assert f"## `{script.name}`" in page
        assert script.sha in page
        assert header in page


def test_design_pages_layers_only_look_down() -> None:
    """The layer table of docs/explanation/design.md is true: each module it lists imports (``from ._x``)
    only modules of its own layer or of layers listed below it. A module the table does not list yet
    (a helper's new one) is not judged here; a listed module that no longer exists fails."""
    design = (ROOT / "docs" / "explanation" / "design.md").read_text()
    table = design.split("## Layers that only look down")[1]
    rows = [line for line in table.split("## ")[0].splitlines() if line.startswith("| ") and "`_" in line]
    layer_of = {
        module: depth
        for depth, row in enumerate(reversed(rows))  # the bottom row is layer 0
        for module in re.findall(r"`(_[a-z_]+)`", row.split("|")[2])
    }
    source = ROOT / "src" / "aiotasks"
    upward = []
    for module, depth in layer_of.items():
        path = source / f"{module}.py"
        assert path.exists(), module
        for imported in re.findall(r"^from \.(_[a-z_]+) import", path.read_text(), flags=re.MULTILINE):
            if layer_of.get(imported, -1) > depth:
                upward.append(f"{module} -> {imported}")
    assert not upward, upward


def test_metrics_reference_names_every_metric() -> None:
    """docs/reference/metrics.md names every metric family aiotasks exports, in-process or computed from
    the records (the names are defined once in ``_metrics``)."""
    page = (ROOT / "docs" / "reference" / "metrics.md").read_text()
    families = [
        *_metrics._FAMILIES,
        _metrics._LAST_END,
        _metrics._PAUSED,
        _metrics._RUNS,
        _metrics._DURATION,
        _metrics._WAIT,
        _metrics._IN_PROGRESS,
    ]
    missing = [name for name, _ in families if f"`{name}`" not in page]
    assert not missing, missing
