"""Runs the documentation's examples as tests (Sybil): every ```python block of README.md and docs/**/*.md.

Each page is one namespace, run top to bottom, so a later block uses what an earlier one defined, as
a reader would. A block may use top-level ``await`` (the docs show natural async code): it is compiled
with ``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT`` and run on the page's own event loop, one per page, closed
after its last block. ``<!-- skip: next -->`` right above a block skips it (the text says why it
can't run here: it needs a real Redis server, a web framework or a network service). Examples use
the in-process store (fakeredis, the ``local`` extra), never a Redis server.

Sybil rather than pytest-examples or pytest-markdown-docs: it keeps a namespace across a page's
blocks (pytest-markdown-docs runs each block alone; pytest-examples is built around formatting and
printed-output checks), takes a custom evaluator in a few lines (the top-level await), and has the
skip directive the other helpers already write.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from typing import Any

from sybil import Example, Sybil
from sybil.evaluators.python import pad
from sybil.parsers.markdown import CodeBlockParser, SkipParser

_RUNNER = "__aiotasks_docs_runner__"


def _evaluate(example: Example) -> None:
    """Run one block in its page's namespace; a block with top-level ``await`` on the page's loop."""
    __tracebackhide__ = True
    namespace: dict[str, Any] = example.namespace
    source = pad(example.parsed, example.line + example.parsed.line_offset)
    code = compile(source, example.path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    result = eval(code, namespace)
    if inspect.iscoroutine(result):
        namespace[_RUNNER].run(result)
    namespace.pop("__builtins__", None)


def _setup(namespace: dict[str, Any]) -> None:
    namespace[_RUNNER] = asyncio.Runner()


def _teardown(namespace: dict[str, Any]) -> None:
    namespace.pop(_RUNNER).close()


pytest_collect_file = Sybil(
    parsers=[CodeBlockParser(language="python", evaluator=_evaluate), SkipParser()],
    patterns=["README.md", "docs/*.md", "docs/**/*.md"],
    setup=_setup,
    teardown=_teardown,
).pytest()
