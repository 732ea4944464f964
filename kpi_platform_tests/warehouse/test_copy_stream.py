"""The COPY CSV stream and the date shortcut of the frame checks: same text and values as pandas would give."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from kpi_platform.warehouse import frames, schema


def read_all(frame: pd.DataFrame, size: int) -> str:
    stream = frames.CsvStream(frame)
    pieces = []
    while piece := stream.read(size):
        pieces.append(piece)
    return "".join(pieces)


def pandas_csv(frame: pd.DataFrame) -> str:
    """The stream as `DataFrame.to_csv` renders it (dates and timestamps as ISO text)."""
    formatted = frame.assign(
        **{
            name: frames.format_distinct(frame[name])
            for name in frame.columns
            if frames.needs_distinct_format(frame[name])
        }
    )
    return formatted.to_csv(index=False, header=False, na_rep=frames.COPY_NULL, lineterminator="\n")


@pytest.fixture
def awkward() -> pd.DataFrame:
    rows = 2 * frames.COPY_CHUNK_ROWS + 7  # several chunks, the last one short
    names = ["a,b", 'say "hi"', "line\nbreak", "", None, "  padded ", "cr\r", "Žluťoučký – kůň"]
    floats = [1.5, np.nan, 1e16, 1e-05, 0.1 + 0.2, -0.0, 123456789.125, 3.0]
    return pd.DataFrame(
        {
            "name": [names[i % len(names)] for i in range(rows)],
            "value": [floats[i % len(floats)] for i in range(rows)],
            "count": np.arange(rows, dtype="int64"),
            "maybe": pd.array([None if i % 5 == 0 else i for i in range(rows)], dtype="Int64"),
            "flag": [i % 2 == 0 for i in range(rows)],
            "day": [None if i % 11 == 0 else date(2026, 1, 1 + i % 28) for i in range(rows)],
            "at": pd.to_datetime([datetime(2026, 3, 2, 6, 0, tzinfo=UTC)] * rows, utc=True),
        }
    )


@pytest.mark.parametrize("size", [1, 97, frames.COPY_READ_SIZE])
def test_stream_is_the_text_to_csv_renders(awkward: pd.DataFrame, size: int) -> None:
    assert read_all(awkward, size) == pandas_csv(awkward)


def test_stream_of_an_empty_frame_is_empty() -> None:
    assert read_all(pd.DataFrame({"a": pd.Series([], dtype="int64")}), 10) == ""


def test_plain_dates_take_the_shortcut_unchanged_and_others_are_still_converted() -> None:
    values = pd.Series([date(2026, 3, 1), date(2026, 3, 2)], index=[5, 9])
    out = frames.to_dates(values, "x.kpi_date")
    assert out.tolist() == values.tolist() and out.index.tolist() == [5, 9] and out.dtype == object

    mixed = pd.Series([date(2026, 3, 1), datetime(2026, 3, 2, 13, 30)])
    assert frames.to_dates(mixed, "x.kpi_date").tolist() == [date(2026, 3, 1), date(2026, 3, 2)]
    assert frames.to_dates(pd.Series(["2026-03-01"]), "x.kpi_date").tolist() == [date(2026, 3, 1)]


def test_a_date_pandas_cannot_hold_is_still_refused() -> None:
    with pytest.raises(ValueError, match="x.kpi_date: not a date"):
        frames.to_dates(pd.Series([date(1, 1, 1)]), "x.kpi_date")


def test_prepared_timestamps_are_utc_whatever_the_zone_given() -> None:
    frame = pd.DataFrame(
        {
            "client_id": ["acme"],
            "kpi_date": [date(2026, 3, 1)],
            "campaign_id": ["c1"],
            "spend": [1.0],
            "impressions": [10],
            "clicks": [1],
            "calls": [0],
            "contacts": [0],
            "leads": [0],
            "reservations": [0],
            "reservation_value": [0.0],
            "currency": ["EUR"],
            "source": ["simulator"],
            "fetched_at": pd.to_datetime(["2026-03-02 08:00"]).tz_localize("Europe/Prague"),
            "run_id": ["r"],
        }
    )
    out = frames.prepare_frame(
        frame,
        schema.campaign_daily_kpis,
        name="c",
        client_id="acme",
        start=date(2026, 3, 1),
        end=date(2026, 3, 1),
    )
    assert str(out["fetched_at"].dt.tz) == "UTC"
    assert out["fetched_at"].iloc[0] == pd.Timestamp("2026-03-02 07:00", tz="UTC")
