"""`cloudmatrix simulate` through the real entry point."""

import json
import subprocess
import sys

SCENARIO = """
name = "cli-small"
system = "cloudmatrix384"
model = "deepseek-r1"
[prefill]
instances = 1
dies = 32
tokens_per_die = 1024
[decode]
instances = 1
dies = 32
batch_per_die = 8
[workload]
kind = "poisson"
rate = 20.0
num_requests = 60
input_len = 1024
output_len = 16
"""


def run(*args):
    return subprocess.run([sys.executable, "-m", "cloudmatrix.cli.main", *args], capture_output=True, text=True)


def test_simulate_prints_json_summary(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO)
    out = run("simulate", str(path), "--json", "--csv", str(tmp_path / "r.csv"))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["requests"]["total"] == 60
    assert summary["decode_tokens_per_s_per_chip"] > 0
    assert (tmp_path / "r.csv").read_text().count("\n") == 61
    # economics for the 32 chips used (64 dies), by hand: CloudMatrix384 $8.2M, 559 kW, 384 chips
    e = summary["economics"]
    share = 32 / 384
    per_hour = 8.2e6 * share / (4 * 8760) + 559.0 * share * 1.3 * 0.08
    expected = per_hour / (summary["output_tokens_per_s"] * 3600) * 1e6
    assert e["chips_used"] == 32
    assert abs(e["usd_per_million_output_tokens"] / expected - 1) < 1e-9


def test_simulate_bad_scenario_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(SCENARIO.replace("[decode]", "[decode]\nwarp_drive = 9"))
    out = run("simulate", str(path))
    assert out.returncode == 2
    assert "warp_drive" in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_simulate_set_override_and_unknown_scenario():
    out = run("simulate", "no-such-scenario")
    assert out.returncode == 2 and "default" in out.stderr
    out = run("simulate", "--set", "nonsense")
    assert out.returncode == 2 and "KEY=VALUE" in out.stderr


def test_scenarios_lists_the_shipped_ones():
    out = run("scenarios")
    assert out.returncode == 0
    for name in ("default", "paper-decode", "gb200-nvl72"):
        assert name in out.stdout


def _one_line_error(out, *words):
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    for w in words:
        assert w in out.stderr, out.stderr


def test_output_paths_are_checked_before_simulating(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO)
    _one_line_error(run("simulate", str(path), "--csv", str(tmp_path)), "is a directory")
    _one_line_error(run("simulate", str(path), "--csv", str(tmp_path / "no" / "r.csv")), "does not exist")
    (tmp_path / "f").write_text("x")
    _one_line_error(run("simulate", str(path), "--plots", str(tmp_path / "f")), "is a file")
    _one_line_error(run("simulate", str(tmp_path)), "is a directory")


def test_duration_shorter_than_the_warmup_scales_it_and_says_so():
    out = run("simulate", "default", "--duration", "60", "--quiet", "--set", "workload.num_requests=12000")
    assert out.returncode == 0, out.stderr
    from cloudmatrix.sim.scenario import load_scenario

    sc = load_scenario("default")
    assert sc.warmup >= 60  # the case the issue reports: the warm-up alone fills a 60 s run
    assert f"warm-up scaled with --duration: {sc.warmup * 60 / sc.duration:g} s" in out.stdout
    assert "SLOs" in out.stdout.strip().splitlines()[-1] or "SLOs" in out.stdout


def test_every_run_ends_with_a_verdict_and_markup_is_not_interpreted(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.replace('name = "cli-small"', 'name = "[/x] [bold]odd"') + "[slo]\ntpot = 0.05\n")
    out = run("simulate", str(path), "--quiet")
    assert out.returncode == 0, out.stderr
    assert "[/x] [bold]odd" in out.stdout
    assert out.stdout.replace("\n", "").rstrip().split("SLOs ")[-1].startswith(("met", "NOT met"))


def test_a_scalar_key_cannot_take_a_subkey():
    _one_line_error(run("simulate", "--set", "name.x.y=1"), "not a section")


def test_a_broken_inline_table_is_named_not_passed_on_as_text():
    # a table split over lines is not TOML: the error names --set and the value, not a schema field
    out = run("simulate", "--set", 'workload={kind="poisson",\n rate=150.0}')
    _one_line_error(out, "--set workload")
    assert "not a valid TOML value" in out.stderr
    # a bare word is still a string (the scenario then says whether that key takes one)
    out = run("simulate", "--set", "name=my-run", "--duration", "5", "--quiet", "--set", "workload.num_requests=50")
    assert out.returncode == 0, out.stderr
