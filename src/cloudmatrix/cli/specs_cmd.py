"""`cloudmatrix specs`: the hardware and model catalog (placeholder until the catalog CLI lands)."""

import typer


def register(app: typer.Typer) -> None:
    specs = typer.Typer(help="Hardware and model catalog.", no_args_is_help=True)

    @specs.command("hardware")
    def hardware() -> None:
        """List the systems and chips in the catalog."""
        from cloudmatrix.specs.hardware import catalog_names

        print("systems:", ", ".join(catalog_names("system")))
        print("chips:", ", ".join(catalog_names("chip")))

    app.add_typer(specs, name="specs")
