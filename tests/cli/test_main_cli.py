"""The root command: quick start, --version, and error lines printed verbatim (never as rich markup)."""

import importlib.metadata

from cloudmatrix.cli import main


def test_no_arguments_prints_the_quick_start_and_the_command_list(cli):
    code, out, _ = cli()
    assert code == 0
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Quick start"))
    quick = lines[start + 1 : start + 6]
    assert [line.split()[1] for line in quick] == ["simulate", "step", "compare", "validate", "serve"]
    assert all(line.startswith("  cloudmatrix ") for line in quick)
    listed = {line.strip("│ ").split(" ")[0] for line in lines[start + 6 :]}
    for command in ("simulate", "step", "compare", "validate", "serve", "specs", "reproduce"):
        assert command in listed, (command, listed)  # every quick-start command exists


def test_version_comes_from_the_installed_metadata(cli):
    code, out, _ = cli("--version")
    assert code == 0
    assert out.strip() == f"cloudmatrix {importlib.metadata.version('cloudmatrix')}"


def test_error_text_with_brackets_is_printed_verbatim(cli, tmp_path):
    # a path holding '[/' made rich raise MarkupError; '[decode]' vanished as a tag
    weird = tmp_path / "[decode]" / "x[/y]"
    code, _, err = cli("specs", "model", str(weird))
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(weird) in err


def test_print_error_is_one_plain_line(capsys):
    main.print_error("[decode]: EP degree 7 [/x] [bold]not bold[/]")
    err = capsys.readouterr().err
    assert err == "error: [decode]: EP degree 7 [/x] [bold]not bold[/]\n"


def test_simulate_override_error_keeps_the_section_name(cli):
    code, _, err = cli("simulate", "--set", "decode.ep=7", "--quiet")
    assert code == 2
    assert "[decode]" in err and err.count("\n") == 1


def test_a_missing_optional_package_is_one_line_naming_its_extra():
    """`cloudmatrix serve` / `generate` on the twin-only install (no torch, no fastapi): one line, exit 2."""
    import subprocess
    import sys

    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'fastapi'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = ['cloudmatrix'] + sys.argv[1:]\n"
        "from cloudmatrix.cli.main import app\n"
        "app()\n"
    )
    for command in (["generate", "hello"], ["serve"]):
        run = subprocess.run([sys.executable, "-c", blocker, *command], capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
        assert "cloudmatrix[engine]" in lines[0] and "torch==2.13.0" in lines[0]


def test_modules_that_are_not_optional_extras_are_not_disguised():
    assert main.missing_extra_message(ModuleNotFoundError("x", name="cloudmatrix.nonexistent")) is None
    assert "cloudmatrix[scale]" in main.missing_extra_message(ModuleNotFoundError("x", name="ray.util"))
