"""The `cloudmatrix` command. Each sub-command lives in its own module and registers itself here.

User errors (CloudMatrixError) print one line in red and exit with status 2, no traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from cloudmatrix.errors import CloudMatrixError

_app = typer.Typer(
    name="cloudmatrix",
    help="Supernode twin and serving engine for large MoE models (CloudMatrix384 and rivals).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


# One module per sub-command under cloudmatrix/cli/, each with register(app); a new command adds its module here.
COMMAND_MODULES = (
    "specs_cmd",
    "step_cmd",
    "simulate_cmd",
    "reproduce_cmd",
    "compare_cmd",
)

_registered = False


def _register() -> None:
    """Add the sub-commands once (imported here so that `import cloudmatrix.cli.main` stays cheap)."""
    global _registered
    if _registered:
        return
    for name in COMMAND_MODULES:
        importlib.import_module(f"cloudmatrix.cli.{name}").register(_app)
    _registered = True


def app() -> None:
    """Console-script entry point."""
    _register()
    try:
        _app(standalone_mode=False)
    except CloudMatrixError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
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
