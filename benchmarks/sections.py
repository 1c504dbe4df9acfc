"""The benchmarks' record, docs/benchmarks.md: each benchmark run with ``--markdown FILE`` rewrites its own
section of FILE and nothing else.

A section is the text between ``<!-- begin NAME -->`` and ``<!-- end NAME -->``; NAME is the script's name,
with the model after a colon when the run was of another model than the script's default set (so that
``bench_trace.py`` and ``bench_trace.py --model smollm2-135m`` keep separate figures). The prose around
the markers (how each method is made fast, what the figures mean) is written by hand and kept as it is;
only the measured figures, and the command line that measured them, are regenerated. A section not yet in
the file is appended under a heading of its name.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]


def add_argument(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--markdown", default=None, metavar="FILE",
                    help="also rewrite this script's section of FILE (docs/benchmarks.md) with the figures")


def section_name(script: str, model: str | None = None) -> str:
    """``bench_trace`` or ``bench_trace:smollm2-135m``: the section a run writes."""
    name = Path(script).stem
    return f"{name}:{model}" if model else name


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that ran, as one would type it from the repository root: ``python benchmarks/x.py ...``."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO))
    except ValueError:  # run from a copy elsewhere: name the script as it was given
        script_text = argv[0]
    return " ".join(["python", shlex.quote(script_text), *map(shlex.quote, argv[1:])])


def machine() -> str:
    """What the figures depend on: torch, threads, cores, the load when they were taken."""
    import torch
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores "
            f"({platform.machine()}), load average {load} at the end")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; a ``|`` in a cell is written as ``/`` so that it cannot split the cell."""
    def cell(x: object) -> str:
        return str(x).replace("|", "/").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- begin {name} -->", f"<!-- end {name} -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with section ``name``'s contents replaced by ``body`` (appended if the section is absent)."""
    begin, end = markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)  # a function: body's backslashes stay literal
    return text.rstrip("\n") + f"\n\n## {name}\n\n{block}\n"


def write_section(path: str | Path, name: str, body: str, command: str | None = None,
                  when: str | None = None) -> str:
    """Rewrite section ``name`` of the Markdown file at ``path`` (created if missing) with ``body``, headed
    by the command that measured it and when; every other section, and the text between sections, is kept.
    Returns the section as written."""
    path = Path(path)
    when = when or time.strftime("%Y-%m-%d")
    head = f"Command: `{command or command_line()}` ({when}; {machine()})."
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    section = f"{head}\n\n{body.strip()}"
    path.write_text(replace_section(text, name, section), encoding="utf-8")
    print(f"wrote section {name} of {path}")
    return section
