"""Whether a client's conversions are tracked, told from the stored counts: one plain classification shared by the
query API (`queries.query_kpis`, column `conversion_tracking`) and the warehouse-wide quality check.

Meta leaves an action type without events out of a row's `actions`, so a day without conversions looks the same
whether nobody converted or the client's conversion tracking (pixel, lead forms, call tracking) is not set up.
Only a window tells the two apart: a client that delivered ads and reported no conversion action at all over the
whole window has no conversion tracking configured (or it broke); one that reported conversions somewhere in the
window and none in the period looked at had zero conversions in that period.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

#: Days before a period that count as evidence of tracking: a client converting within them is tracked.
TRACKING_WINDOW_DAYS: Final = 30

CONVERTING: Final = "converting"
ZERO_CONVERSIONS: Final = "zero conversions"
TRACKING_NOT_CONFIGURED: Final = "tracking not configured"
NO_DELIVERY: Final = "no delivery"
#: Every label `classify` gives.
CONVERSION_TRACKING_LEVELS: Final[tuple[str, ...]] = (
    CONVERTING,
    ZERO_CONVERSIONS,
    TRACKING_NOT_CONFIGURED,
    NO_DELIVERY,
)
_LEVELS: Final = np.array(CONVERSION_TRACKING_LEVELS, dtype=object)
_LEVEL_CODES: Final = {label: code for code, label in enumerate(CONVERSION_TRACKING_LEVELS)}


def classify(
    period_conversions: npt.ArrayLike,
    period_delivered: npt.ArrayLike,
    window_conversions: npt.ArrayLike,
) -> npt.NDArray[np.object_]:
    """The conversion-tracking label of each period, element-wise.

    `period_conversions` counts the period's conversions (calls, contacts, leads, reservations: the count
    columns), `period_delivered` says whether any ad was shown or paid for in it, and `window_conversions` counts
    the conversions of the client's window, which holds the period and the TRACKING_WINDOW_DAYS before it:

    - "converting": the period has conversions;
    - "no delivery": it has none and delivered nothing (an idle period says nothing about tracking);
    - "zero conversions": it delivered without conversions, but the client reported conversions in the window;
    - "tracking not configured": it delivered, and no conversion action was reported anywhere in the window.
    """
    period = np.asarray(period_conversions, dtype="float64")
    delivered = np.asarray(period_delivered, dtype=bool)
    window = np.asarray(window_conversions, dtype="float64")
    if not period.shape == delivered.shape == window.shape:
        raise ValueError(
            f"conversion tracking: arguments differ in shape ({period.shape}, {delivered.shape}, {window.shape})"
        )
    # Positions in CONVERSION_TRACKING_LEVELS, then the labels by position: choosing among numbers and taking
    # the shared label objects costs a fraction of choosing among strings and converting each to an object.
    codes = np.select(
        [period > 0, ~delivered, window > 0],
        [_LEVEL_CODES[CONVERTING], _LEVEL_CODES[NO_DELIVERY], _LEVEL_CODES[ZERO_CONVERSIONS]],
        default=_LEVEL_CODES[TRACKING_NOT_CONFIGURED],
    )
    return _LEVELS[codes]
