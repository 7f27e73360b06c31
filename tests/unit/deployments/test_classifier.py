"""The classifier deployment's batching wait (deployments/classifier.py: BatchWait), without Ray."""

from __future__ import annotations

import pytest

from deployments.classifier import BatchWait
from serve_app.config import ClassifierOptions


def test_adaptive_wait_opens_only_after_a_batch_with_company() -> None:
    wait = BatchWait(0.002)
    assert wait.first() == 0.0  # an idle replica classifies the first prompt at once
    assert wait.after(1) == 0.0  # alone: the next prompt goes straight through too
    assert wait.after(5) == 0.002  # prompts overlapped: the next batch waits for company
    assert wait.after(32) == 0.002
    assert wait.after(1) == 0.0  # the burst is over


def test_fixed_wait_always_waits() -> None:
    wait = BatchWait(0.002, adaptive=False)
    assert wait.first() == 0.002
    assert [wait.after(n) for n in (1, 2, 1)] == [0.002, 0.002, 0.002]


def test_options_default_to_adaptive_and_check_the_wait() -> None:
    options = ClassifierOptions()
    assert options.adaptive_batch_wait is True and options.batch_wait_timeout_s == 0.002
    with pytest.raises(ValueError):
        ClassifierOptions(batch_wait_timeout_s=-1)
    with pytest.raises(ValueError):
        ClassifierOptions.model_validate({"adaptive_batch_wait": True, "batch_wait": 1})
