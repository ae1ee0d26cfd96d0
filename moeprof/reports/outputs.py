"""The output formats of `moeprof analyze` and `moeprof diff`: format name -> renderer.

A renderer prints one result (an Analysis, a DiffResult, or the kernel report of a capture without
format/batch labels) to stdout; terminal options (explain,
show_all) reach the renderers that use them and are ignored by the others.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from moeprof.reports import export, kernel_table, markdown, terminal

Renderer = Callable[..., None]


def _text(make: Callable[[Any], str]) -> Renderer:
    """A renderer that writes the text `make(result)` returns, ending with one newline."""
    def render(result: Any, **_options: Any) -> None:
        text = make(result)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return render


RENDERERS: dict[str, dict[str, Renderer]] = {
    "analysis": {
        "table": lambda a, explain=False, **_: terminal.render_analysis(a, explain=explain),
        "markdown": _text(markdown.analysis_markdown),
        "json": _text(export.analysis_json),
        "csv": _text(export.analysis_csv),
    },
    "kernels": {
        "table": lambda r, **_: kernel_table.render(r),
        "markdown": _text(kernel_table.markdown),
        "json": _text(kernel_table.as_json),
        "csv": _text(kernel_table.as_csv),
    },
    "diff": {
        "table": lambda d, show_all=False, **_: terminal.render_diff(d, show_all=show_all),
        "markdown": _text(markdown.diff_markdown),
        "json": _text(export.diff_json),
        "csv": _text(export.diff_csv),
    },
}
