"""`wagate serve` tunes Python's cyclic garbage collector before it serves (`cli`)."""

from __future__ import annotations

import gc

import pytest

from wagate import cli


def test_start_up_objects_are_frozen_then_the_thresholds_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def collect(*_: object) -> int:
        calls.append("collect")
        return 0

    # Freezing this test process's objects for real would exempt them for the rest of the run.
    monkeypatch.setattr(gc, "collect", collect)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    before = gc.get_threshold()
    try:
        cli._tune_garbage_collector()
        # Collected first, so that what is frozen is what survives; frozen before serving.
        assert calls == ["collect", "freeze"]
        assert gc.get_threshold() == cli.GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)


def test_the_youngest_generation_is_collected_less_often_than_by_default() -> None:
    # Python's default is 700; the point of the setting is far fewer collections under load.
    assert cli.GC_THRESHOLDS[0] >= 10 * 700
    assert all(threshold > 0 for threshold in cli.GC_THRESHOLDS)  # 0 would turn the GC off
