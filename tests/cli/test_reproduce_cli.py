"""`cloudmatrix reproduce` flags: bad numbers and bad report paths are one-line errors before any work."""

import pytest


@pytest.mark.parametrize("scale", ["nan", "inf", "0", "-1"])
def test_duration_scale_must_be_positive_and_finite(cli, scale):
    code, out, err = cli("reproduce", "--no-sim", "--duration-scale", scale)
    assert code == 2 and out == ""
    assert "--duration-scale must be" in err and err.count("\n") == 1


def test_bad_report_paths_fail_first(cli, tmp_path):
    a_file = tmp_path / "FILE"
    a_file.write_text("x")
    for report, message in (
        (a_file / "r.md", "is a file, so it cannot hold r.md"),
        (tmp_path, "must end in .md or .html"),
        (tmp_path / "d.md", "is a directory"),
        (tmp_path / "r.txt", "must end in .md or .html"),
    ):
        if report.suffix == ".md" and report.parent == tmp_path:
            report.mkdir()
        code, out, err = cli("reproduce", "--no-sim", "--report", str(report))
        assert code == 2 and out == "", report
        assert message in err and err.count("\n") == 1, err


def test_report_into_a_new_folder(cli, tmp_path):
    report = tmp_path / "new" / "r.md"
    code, out, _ = cli("reproduce", "--no-sim", "--report", str(report))
    assert code == 0, out
    assert report.read_text().startswith("# CloudMatrix-Infer paper figures reproduced")
