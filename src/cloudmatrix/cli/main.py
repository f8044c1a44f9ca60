"""The `cloudmatrix` command. Each sub-command lives in its own module and registers itself here.

User errors (CloudMatrixError) print one line and exit with status 2, no traceback. The message is printed as
plain text, never as rich markup: user text (a scenario name, a path, a trace cell) may contain `[`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from cloudmatrix.errors import CloudMatrixError

_app = typer.Typer(
    name="cloudmatrix",
    help="Supernode twin and serving engine for large MoE models (CloudMatrix384 and rivals).",
    no_args_is_help=False,  # the root callback prints the quick start, then the command list
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True, highlight=False, markup=False, emoji=False)


# One module per sub-command under cloudmatrix/cli/, each with register(app); a new command adds its module here.
COMMAND_MODULES = (
    "specs_cmd",
    "step_cmd",
    "simulate_cmd",
    "reproduce_cmd",
    "compare_cmd",
    "plan_cmd",
    "validate_cmd",
    "generate_cmd",
    "serve_cmd",
)

QUICK_START = """\
Quick start (docs/quickstart.md walks through it in ten minutes):
  cloudmatrix simulate                 CloudMatrix384 serving DeepSeek-R1: TTFT, TPOT, verdict
  cloudmatrix step                     one decode step, op by op, and its roofline limit
  cloudmatrix compare                  the same workload on GB200 NVL72 and HGX, with $ and J/token
  cloudmatrix validate --suite paper   the twin against the paper's published figures
  cloudmatrix serve                    the small engine behind an OpenAI-compatible HTTP API
"""

_registered = False


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cloudmatrix")
    except PackageNotFoundError:  # running from a source tree that was never installed
        from cloudmatrix import __version__

        return __version__


@_app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    show_version: Annotated[
        bool, typer.Option("--version", help="Print the installed version and exit.", is_eager=True)
    ] = False,
) -> None:
    """Supernode twin and serving engine for large MoE models (CloudMatrix384 and rivals)."""
    if show_version:
        typer.echo(f"cloudmatrix {_version()}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(QUICK_START)
        typer.echo(ctx.get_help())
        raise typer.Exit()


def _register() -> None:
    """Add the sub-commands once (imported here so that `import cloudmatrix.cli.main` stays cheap)."""
    global _registered
    if _registered:
        return
    for name in COMMAND_MODULES:
        importlib.import_module(f"cloudmatrix.cli.{name}").register(_app)
    _registered = True


# Optional packages and the extra that brings each (pyproject.toml); a command that needs one says so in one line.
OPTIONAL_PACKAGES = {
    "torch": "engine",
    "safetensors": "engine",
    "tokenizers": "engine",
    "fastapi": "engine",
    "uvicorn": "engine",
    "starlette": "engine",
    "prometheus_client": "engine",
    "ray": "scale",
    "aiconfigurator_core": "validate",
    "pandas": "calibrate",
    "pyarrow": "calibrate",
}


def missing_extra_message(e: ModuleNotFoundError) -> str | None:
    """The one-line fix for a missing optional package, or None when the module is not one of ours."""
    root = (e.name or "").split(".")[0]
    extra = OPTIONAL_PACKAGES.get(root)
    if extra is None:
        return None
    first = "pip install torch==2.13.0 && " if extra == "engine" else ""  # the CPU build, before pip picks a CUDA one
    return f"this command needs {root!r}, from the {extra} extra: {first}pip install 'cloudmatrix[{extra}]'"


def print_error(message: str) -> None:
    """One line on stderr, `error: ` in bold red and the message verbatim (no markup, no wrapping)."""
    err_console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


def app() -> None:
    """Console-script entry point."""
    _register()
    try:
        _app(standalone_mode=False)
    except CloudMatrixError as e:
        print_error(" ".join(str(e).split()))  # one line even if a message carries a newline
        sys.exit(2)
    except ModuleNotFoundError as e:
        message = missing_extra_message(e)
        if message is None:
            raise
        print_error(message)
        sys.exit(2)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", None)
        if code is None:
            code = getattr(e, "code", 0)
        sys.exit(code or 0)
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        # typer vendors click (typer._click), so recognise its exceptions by shape, not by class.
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        if type(e).__name__ == "Abort":
            sys.exit(130)
        raise


if __name__ == "__main__":
    app()
