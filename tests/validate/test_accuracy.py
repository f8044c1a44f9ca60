"""Accuracy arithmetic against hand-computed values."""

import pytest

from cloudmatrix.validate.accuracy import MetricStats, summarize
from cloudmatrix.validate.rows import ValidationRow, rel_error


def row(id, measured, predicted=None, slice="s1", tag="validation", refused=None, reference=None):
    return ValidationRow(
        suite="t", id=id, slice=slice, tag=tag, conditions="", measured={"tpot": measured},
        predicted={} if predicted is None else {"tpot": predicted}, refused=refused,
        reference={} if reference is None else {"tpot": reference},
    )  # fmt: skip


def test_signed_error_is_predicted_over_measured_minus_one():
    assert rel_error(0.012, 0.010) == pytest.approx(0.2)
    assert rel_error(0.005, 0.010) == pytest.approx(-0.5)
    assert rel_error(None, 0.010) is None and rel_error(0.01, 0.0) is None


def test_metric_stats_by_hand():
    # errors +10%, -30%, +5%, -50%: |e| = .10 .30 .05 .50 -> MAPE .2375; sorted e: -.5 -.3 .05 .1 -> median -.125
    s = MetricStats.of([0.10, -0.30, 0.05, -0.50])
    assert s.n == 4
    assert s.mape == pytest.approx(0.2375)
    assert s.signed_median == pytest.approx(-0.125)
    assert s.within_10 == pytest.approx(0.5)  # .10 counts as within 10%, .05 too
    assert s.within_20 == pytest.approx(0.5)
    assert MetricStats.of([]).mape is None


def test_summary_counts_refusals_skips_calibration_and_splits_slices():
    rows = [
        row("a", 10.0, 11.0),  # +10%
        row("b", 10.0, 7.0),  # -30%
        row("c", 10.0, 5.0, slice="s2"),  # -50%
        row("d", 10.0, refused="attention TP not modelled"),
        row("e", 10.0, refused="attention TP not modelled", slice="s2"),
        row("f", 10.0, refused="system not in the twin's catalog"),
        row("g", 10.0, 30.0, tag="calibration"),  # +200%, must not count
    ]
    overall, slices = summarize(rows, ["tpot"])
    assert (overall.rows, overall.predicted) == (6, 3)
    assert overall.coverage == pytest.approx(0.5)
    assert overall.refused == {"attention TP not modelled": 2, "system not in the twin's catalog": 1}
    assert overall.metrics["tpot"].mape == pytest.approx((0.1 + 0.3 + 0.5) / 3)
    assert overall.metrics["tpot"].signed_median == pytest.approx(-0.3)
    s1, s2 = slices
    assert (s1.name, s1.rows, s1.predicted) == ("s1", 4, 2)
    assert s1.metrics["tpot"].mape == pytest.approx(0.2)
    assert (s2.name, s2.predicted, s2.metrics["tpot"].mape) == ("s2", 1, pytest.approx(0.5))


def test_side_by_side_compares_on_shared_rows_only():
    rows = [
        row("a", 10.0, 12.0, reference=9.0),  # twin +20%, AIC -10%
        row("b", 10.0, 6.0),  # twin only
        row("c", 10.0, refused="x", reference=15.0),  # AIC only: +50%
    ]
    overall, _ = summarize(rows, ["tpot"])
    assert overall.reference_predicted == 2
    assert overall.reference_all["tpot"].mape == pytest.approx((0.1 + 0.5) / 2)
    assert overall.reference["tpot"].n == 1 and overall.reference["tpot"].mape == pytest.approx(0.1)
    assert overall.twin_on_shared["tpot"].mape == pytest.approx(0.2)


def test_tables_name_each_metric_the_way_a_reader_knows_it():
    from cloudmatrix.report.validate_report import SuiteResult, tables

    silicon = tables(SuiteResult("silicon", ("ttft", "tpot"), [row("a", 10.0, 11.0)]))
    assert [r[0] for r in silicon[0].rows] == ["TTFT", "TPOT"]
    paper = ValidationRow(suite="paper", id="p", slice="decode", tag="validation", conditions="",
                          measured={"figure": 1943.0}, predicted={"figure": 2300.0})  # fmt: skip
    (overall, *_) = tables(SuiteResult("paper", ("figure",), [paper], unit="as published", scale=1.0))
    assert overall.rows[0][0] == "published figure"  # not the internal key upper-cased ("FIGURE")
