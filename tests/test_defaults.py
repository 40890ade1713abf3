"""A run's defaults are written once (``asyncproc._options.DEFAULTS``).

The ``run`` command's flags show them, and the README's option table states them: both
are checked against that one source here, so a default changed in one place only fails.
"""

from __future__ import annotations

import re
from typing import Any

import click
from conftest import REPO

from asyncproc._options import DEFAULT_CHECKPOINT, DEFAULT_MAX_CONCURRENCY, DEFAULTS, Options
from asyncproc.cli.run import run_command

ROW = re.compile(r"^\| `(--[a-z-]+)[^`]*`[^|]*\| ([^|]*) \|")


def _options() -> dict[str, click.Option]:
    return {p.name: p for p in run_command.params if isinstance(p, click.Option) and p.name}


def _readme_defaults() -> dict[str, str]:
    """The run table's default column, by flag (the table right under "## The CLI")."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## The CLI") :].split("\n\n")[2]
    rows = (ROW.match(line) for line in table.splitlines())
    return {m[1]: m[2].strip() for m in rows if m is not None}


def _same(readme: str, default: Any) -> bool:
    shown = readme.strip("`")
    if isinstance(default, int | float) and not isinstance(default, bool):
        return re.fullmatch(r"[0-9.]+", shown) is not None and float(shown) == float(default)
    return shown == str(default)


def test_the_flags_default_to_the_options_defaults() -> None:
    fields = set(Options.__dataclass_fields__)
    checked = {name: p.default for name, p in _options().items()
               if name in fields and isinstance(p.default, int | float | str)}  # fmt: skip
    assert len(checked) >= 10, checked  # the flags do take their defaults from Options
    wrong = {n: (d, getattr(DEFAULTS, n)) for n, d in checked.items()
             if str(d) != str(getattr(DEFAULTS, n))}  # fmt: skip
    assert wrong == {}, "flag default vs Options default"


def test_the_readme_table_states_the_same_defaults() -> None:
    readme = _readme_defaults()
    shown = {p.opts[0]: p.default for p in _options().values() if p.show_default}
    assert len(shown) >= 10 and set(shown) <= set(readme), sorted(set(shown) - set(readme))
    wrong = {flag: (readme[flag], d) for flag, d in shown.items() if not _same(readme[flag], d)}
    assert wrong == {}, "README default vs the flag's"
    assert _same(readme["--max-concurrency"], DEFAULT_MAX_CONCURRENCY)
    assert readme["--checkpoint"].startswith(f"`{DEFAULT_CHECKPOINT}`")
