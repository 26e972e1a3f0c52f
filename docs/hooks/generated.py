"""MkDocs hook: the references that are rendered from the code at build time, never copied by hand.

A page asks for one with a marker line of its own:

* ``<!-- generated: cli -->`` -- ``aiotasks --help`` and every subcommand's usage and options, from
  the argparse parser the command itself runs (``aiotasks._cli._parser``), so a new option or
  subcommand shows up in the docs the moment it is in the code;
* ``<!-- generated: scripts -->`` -- every Lua script of ``aiotasks._scripts`` with its KEYS/ARGV/return
  header comments (the contract each script keeps), and its SHA1.

A marker that names nothing known is a warning, which ``mkdocs build --strict`` turns into a failure.

The docstrings use Sphinx roles (:func:`run_chain`), which mkdocstrings leaves as text: the rendered
pages show them as plain code (``~pkg.name`` as ``name``, as Sphinx would).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from typing import Any

from aiotasks import _cli, _scripts

log = logging.getLogger("mkdocs.plugins.aiotasks")

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)
# argparse wraps help to the terminal's width (it reads $COLUMNS): fix it, so the page does not
# depend on the terminal that built it.
HELP_WIDTH = "100"


def _fence(text: str) -> str:
    return f"```text\n{text.rstrip()}\n```"


def _cli_reference() -> str:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        parser = _cli._parser()
        parts = ["## `aiotasks`", _fence(parser.format_help())]
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        # An alias (``reset`` for ``clear``) is the same parser under a second name: shown once.
        names: dict[int, list[str]] = {}
        for name, sub in subparsers.choices.items():
            names.setdefault(id(sub), []).append(name)
        shown: set[int] = set()
        for sub in subparsers.choices.values():
            if id(sub) in shown:
                continue
            shown.add(id(sub))
            first, *aliases = names[id(sub)]
            also = f" (alias: {', '.join(f'`{alias}`' for alias in aliases)})" if aliases else ""
            parts += [f"## `aiotasks {first}`{also}", _fence(sub.format_help())]
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return "\n\n".join(parts)


def _script_header(source: str) -> str:
    """The script's contract: its first run of ``--`` comment lines that starts at ``-- KEYS``."""
    lines = source.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("-- KEYS")), None)
    if start is None:
        return ""
    header = []
    for line in lines[start:]:
        if not line.startswith("--"):
            break
        header.append(line)
    return "\n".join(header)


def _scripts_reference() -> str:
    parts = []
    for name in _scripts.__all__:
        script = getattr(_scripts, name)
        if not isinstance(script, _scripts.Script):
            continue
        header = _script_header(script.source)
        if not header:
            log.warning("docs: script %s has no '-- KEYS' header comment", name)
        parts += [f"## `{script.name}`", f"SHA1 `{script.sha}`", f"```lua\n{header}\n```"]
    return "\n\n".join(parts)


# What mkdocstrings makes of a role: the role's name as text, then the target in <code>.
SPHINX_ROLE = re.compile(r":(?:func|class|meth|attr|data|exc|mod|obj):<code>(~?)([^<]+)</code>")


def _plain_role(match: re.Match[str]) -> str:
    target = match.group(2).rsplit(".", 1)[-1] if match.group(1) else match.group(2)
    return f"<code>{target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    return SPHINX_ROLE.sub(_plain_role, html)


GENERATORS = {"cli": _cli_reference, "scripts": _scripts_reference}


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    def render(match: re.Match[str]) -> str:
        generate = GENERATORS.get(match.group(1))
        if generate is None:
            log.warning("docs: %s asks for unknown generated content %r", page.file.src_uri, match.group(1))
            return match.group(0)
        return generate()

    return MARKER.sub(render, markdown)
