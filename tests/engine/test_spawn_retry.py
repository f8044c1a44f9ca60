"""The test harness's one retry: only for a rank killed by a signal, never for a rank that raises."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("torch")

from torch.multiprocessing.spawn import ProcessRaisedException  # noqa: E402

from .spawn_retry import run_ranks_once_more_on_signal  # noqa: E402


def _abort_first_time(rank: int, world: int, marker: str) -> int:
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.abort()  # SIGABRT, as the flaky gloo setup did
    return rank


def _always_raise(rank: int, world: int) -> int:
    raise ValueError("a real bug")


def test_a_rank_killed_by_a_signal_is_retried_once(tmp_path):
    with pytest.warns(UserWarning, match="SIGABRT"):
        assert run_ranks_once_more_on_signal(_abort_first_time, 1, str(tmp_path / "m"), timeout_s=30) == [0]


def test_a_rank_that_raises_is_not_retried():
    with pytest.raises(ProcessRaisedException, match="a real bug"):
        run_ranks_once_more_on_signal(_always_raise, 1, timeout_s=30)
