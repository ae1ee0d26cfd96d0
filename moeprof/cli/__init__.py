"""Thin command-line layer over the library. Each sub-command lives in its own module.

Conventions shared by every command: `-h`/`--help` and `--version` everywhere, boolean options are
flags (`--json`, never `--json true`), defaults come from `moeprof.cli.defaults`, and every error,
usage errors included, is one line on stderr (`moeprof: error: ...`, exit status 2).
"""

from __future__ import annotations

import os
import re
import sys

import typer

import moeprof
from moeprof.errors import MoeprofError

_ABOUT = "Profile MoE layers in BF16, FP8 and MXFP4 and explain which format is faster, where and why."

app = typer.Typer(
    name="moeprof",
    help=_ABOUT,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help text: flags show as flags, and it reads the same piped or at 80 columns.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"moeprof {moeprof.__version__}")
        raise typer.Exit()


def version_option() -> bool:
    """The `--version` flag; every command declares it so that `moeprof CMD --version` works too."""
    return typer.Option(False, "--version", help="Show the version and exit.", is_eager=True,
                        callback=_print_version, expose_value=False)


@app.callback()
def _root(_version: bool = version_option()) -> None:
    """Profile MoE layers in BF16, FP8 and MXFP4 and explain which format is faster, where and why."""


def positive_int(text: str, option: str) -> int:
    """An integer option given as text (so that a bad value is one moeprof error line, not click's)."""
    if not re.fullmatch(r"\s*\+?\d+\s*", text or "") or int(text) < 1:
        raise MoeprofError(f"{option} must be a positive integer, got {text!r}")
    return int(text)


def _register() -> None:
    # Imported here so that `moeprof --help` stays fast and each command owns its module.
    from moeprof.cli import analyze, capture, kernels, roofline  # noqa: F401


def _usage_line(exc: BaseException) -> str:
    """A usage error (bad option, missing argument) as one line, naming the command and its help."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = " ".join(message.split())
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"moeprof: error: {message}{where}"


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one-line errors, no tracebacks (set MOEPROF_DEBUG=1 to see them)."""
    _register()
    try:
        app(args=argv, prog_name="moeprof", standalone_mode=False)
    except MoeprofError as exc:
        typer.echo(f"moeprof: error: {exc}", err=True)
        return int(getattr(exc, "exit_code", 2))  # an interrupted capture: 128 + signal, as shells report it
    except KeyboardInterrupt:
        typer.echo("moeprof: interrupted", err=True)
        return 130
    except SystemExit as exc:  # typer/click exits (help, version)
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001 - last resort: never show a traceback to users
        name = type(exc).__name__
        if name == "NoArgsIsHelpError":  # bare `moeprof`: the help text is the answer
            exc.show()
            return 2
        # Usage errors (click's, bundled inside typer): one line, not click's usage block.
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            typer.echo(_usage_line(exc), err=True)
            return int(exc.exit_code)
        if name == "Abort":
            typer.echo("moeprof: aborted", err=True)
            return 1
        if os.environ.get("MOEPROF_DEBUG"):
            raise
        typer.echo(f"moeprof: internal error: {name}: {exc} (MOEPROF_DEBUG=1 shows the traceback)", err=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())


def console() -> None:
    sys.exit(main())
