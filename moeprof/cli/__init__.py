"""Thin command-line layer over the library. Each sub-command lives in its own module."""

from __future__ import annotations

import os
import sys

import typer

from moeprof.errors import MoeprofError

app = typer.Typer(
    name="moeprof",
    help="Profile MoE layers in BF16, FP8 and MXFP4 and explain which format is faster, where and why.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Profile MoE layers in BF16, FP8 and MXFP4 and explain which format is faster, where and why."""


def _register() -> None:
    # Imported here so that `moeprof --help` stays fast and each command owns its module.
    from moeprof.cli import analyze, capture, roofline  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one-line errors, no tracebacks (set MOEPROF_DEBUG=1 to see them)."""
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except MoeprofError as exc:
        typer.echo(f"moeprof: error: {exc}", err=True)
        return int(getattr(exc, "exit_code", 2))  # an interrupted capture: 128 + signal, as shells report it
    except KeyboardInterrupt:
        typer.echo("moeprof: interrupted", err=True)
        return 130
    except SystemExit as exc:  # typer/click exits (help, usage errors)
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001 - last resort: never show a traceback to users
        # Usage errors (click's, bundled inside typer) know how to show themselves.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return int(exc.exit_code)
        if type(exc).__name__ == "Abort":
            typer.echo("moeprof: aborted", err=True)
            return 1
        if os.environ.get("MOEPROF_DEBUG"):
            raise
        typer.echo(f"moeprof: internal error: {type(exc).__name__}: {exc} (MOEPROF_DEBUG=1 shows the traceback)", err=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())


def console() -> None:
    sys.exit(main())
