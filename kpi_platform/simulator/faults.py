"""The failures the simulator can inject, and how to ask for them.

Every fault is off until asked for: a test scripts the exact outcome of the n-th request, or a soak run sets rates
that are drawn from a seeded RNG, so the same seed fails the same requests again. Faults below HTTP (a dropped
connection, a silent socket) are raised as `TransportFault`, because only the transport can turn them into what a
client sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kpi_platform import settings

ErrorCode = int | tuple[int, int]
#: One scripted request outcome: a Graph error code, (code, subcode), "drop", "timeout", "malformed", or None (serve).
ScriptedFault = int | tuple[int, int] | str | None
TRANSPORT_FAULTS = frozenset({"drop", "timeout"})
BODY_FAULTS = frozenset({"malformed"})


@dataclass(frozen=True)
class FaultConfig:
    """Failures to inject; all off by default.

    Per insights/report request, in this order: a hang (below), the `scripted_errors` entry for the n-th such
    request (None = serve normally), else `drop_rate`, `malformed_rate` and each of `error_rates` (drawn from an
    RNG seeded with `seed`).
    A "timeout" holds a real HTTP connection silent for `timeout_seconds` (set it above the client's read timeout);
    in process it raises `requests.ReadTimeout` at once. `slow_seconds` delays every response.

    `hang_while_path` names a file: while it exists, every insights/report request is held unanswered (at most
    `hang_seconds`, then served), in process as over HTTP, the way a call stuck below the client's timeouts never
    returns; the test or operator removes the file to end the stall. Token introspection (`debug_token`) is
    never faulted.

    `fail_page` (1-based) always fails with `fail_page_error` on every paged result. `too_large_days` refuses longer
    time ranges with 100/1487534. `restate_days` / `restatement_version` change spend and conversions of the most
    recent days, as Meta does while attributions arrive. On throttle errors `throttle_regain_minutes` goes into
    `X-Business-Use-Case-Usage.estimated_time_to_regain_access` (minutes, as Meta sends it).
    """

    error_rates: Mapping[ErrorCode, float] = field(default_factory=dict)
    scripted_errors: Sequence[ScriptedFault] = ()
    throttle_regain_minutes: float | None = None
    slow_seconds: float = 0.0
    timeout_seconds: float = settings.HTTP_TIMEOUT[1] + 5.0
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    fail_page: int | None = None
    fail_page_error: ErrorCode = 2
    async_stuck: bool = False
    async_fail: bool = False
    too_large_days: int | None = None
    restate_days: int = 0
    restatement_version: int = 0
    seed: int = 0
    hang_while_path: str | None = None
    hang_seconds: float = 600.0

    def __post_init__(self) -> None:
        rates = {"drop_rate": self.drop_rate, "malformed_rate": self.malformed_rate}
        rates.update({f"error_rates[{code!r}]": rate for code, rate in self.error_rates.items()})
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be a probability within 0..1, got {rate}")
        for entry in self.scripted_errors:
            if isinstance(entry, str) and entry not in TRANSPORT_FAULTS | BODY_FAULTS:
                raise ValueError(
                    f"unknown scripted fault {entry!r}: use a code, (code, subcode), drop, timeout, malformed"
                )
        if self.hang_seconds <= 0:
            raise ValueError(f"hang_seconds must be positive, got {self.hang_seconds}")
        if self.fail_page is not None and self.fail_page < 1:
            raise ValueError("fail_page is 1-based")


class TransportFault(Exception):
    """Raised by the WSGI app for faults below HTTP: each transport turns it into a dropped or silent connection."""

    def __init__(self, kind: str, seconds: float = 0.0) -> None:
        super().__init__(kind)
        self.kind = kind
        self.seconds = seconds
