"""The conversion-tracking label: conversions in the period win, an idle period says nothing, and a period without
conversions is "zero conversions" only when the window holds some."""

from __future__ import annotations

import pytest

from kpi_platform.warehouse.conversion_tracking import (
    CONVERSION_TRACKING_LEVELS,
    CONVERTING,
    NO_DELIVERY,
    TRACKING_NOT_CONFIGURED,
    ZERO_CONVERSIONS,
    classify,
)


def test_each_label_and_its_precedence():
    labels = classify(
        [3, 0, 0, 0, 2],  # the period's conversions
        [True, True, True, False, False],  # whether the period delivered
        [3, 7, 0, 7, 2],  # the window's conversions (the period included)
    )
    assert labels.tolist() == [CONVERTING, ZERO_CONVERSIONS, TRACKING_NOT_CONFIGURED, NO_DELIVERY, CONVERTING]
    assert set(labels.tolist()) <= set(CONVERSION_TRACKING_LEVELS)


def test_arguments_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        classify([1, 2], [True], [1, 2])
