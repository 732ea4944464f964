"""Dependency injection and default wiring: the Meta API client, the warehouse and the application database.

Keep asset logic out of here. Configuration comes from the environment at run time (never at import), and the
access token is read from the environment by name so it never appears in run config or the UI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import requests

from kpi_platform import settings
from kpi_platform.activity.source import AppDatabase
from kpi_platform.meta.client import ClosableInsightsSource, MetaInsightsClient
from kpi_platform.meta.pacing import InMemoryPacingStore, Pacer, PacingPolicy, PacingStore
from kpi_platform.meta.token_check import TIMEOUT as TOKEN_CHECK_TIMEOUT
from kpi_platform.meta.token_check import TokenInfo, fetch_token_info
from kpi_platform.simulator import (
    AccountSpec,
    FaultConfig,
    MetaSimulator,
    SimulatorConfig,
    mount_simulator,
)
from kpi_platform.warehouse import Warehouse

#: The simulator accepts any token; this one is used when no real token is configured.
SIMULATOR_TOKEN = "simulator-token"


class MissingTokenError(RuntimeError):
    """The real Meta API was configured without an access token."""


@lru_cache(maxsize=8)
def _migrated_warehouse(url: str) -> Warehouse:
    # One engine per process and URL; migrations are applied once, on first use.
    warehouse = Warehouse(url)
    warehouse.migrate()
    return warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The KPI warehouse. `url` empty means KPI_WAREHOUSE_URL, else the embedded SQLite file."""

    url: str | None = None

    def resolved_url(self) -> str:
        return self.url or settings.warehouse_url()

    def get_warehouse(self) -> Warehouse:
        return _migrated_warehouse(self.resolved_url())


class AppDatabaseResource(dg.ConfigurableResource):
    """The application database (profiles, posts, comments), read only. `url` empty means KPI_APP_DB_URL, else
    the demo SQLite file in the local data folder."""

    url: str | None = None

    def resolved_url(self) -> str:
        return self.url or settings.app_db_url()

    def get_app_database(self) -> AppDatabase:
        """A reader for one run; the caller disposes of it."""
        return AppDatabase(self.resolved_url())


class MetaApiResource(dg.ConfigurableResource):
    """The Meta Marketing API (or the built-in simulator when no API URL is configured)."""

    api_url: str | None = None
    #: Name of the environment variable holding the access token (the token itself is never config).
    token_env_var: str = settings.ENV_TOKEN
    connect_timeout_s: float = settings.HTTP_TIMEOUT[0]
    read_timeout_s: float = settings.HTTP_TIMEOUT[1]
    max_attempts: int = settings.MAX_ATTEMPTS
    #: Pacing from the usage headers (meta/pacing.py): the usage percentage above which calls slow down and the
    #: longest proportional delay; empty means KPI_META_PACING_THRESHOLD_PCT / KPI_META_PACING_MAX_DELAY_S or 75 / 60.
    pacing_threshold_pct: float | None = None
    pacing_max_delay_s: float | None = None
    #: Faults for the in-process simulator, as FaultConfig fields in JSON (else KPI_SIMULATOR_FAULTS); for demos
    #: of retries and healing, and for tests.
    simulator_faults_json: str | None = None

    def resolved_url(self) -> str:
        return self.api_url or settings.meta_api_url()

    def uses_in_process_simulator(self) -> bool:
        return self.resolved_url() == settings.SIMULATOR_BASE_URL

    def build_session(self, accounts: Mapping[str, str] | None = None) -> requests.Session:
        """A session; for the in-process simulator, with the simulator mounted (accounts: ad account → currency)."""
        session = requests.Session()
        if self.uses_in_process_simulator():
            raw = self.simulator_faults_json or os.environ.get(settings.ENV_SIMULATOR_FAULTS)
            simulator = MetaSimulator(simulator_config(accounts), faults_from_json(raw) if raw else None)
            mount_simulator(session, simulator)
        return session

    def pacing_policy(self) -> PacingPolicy:
        """The configured pacing rule; a bad value raises ValueError naming the setting."""
        env = PacingPolicy.from_env()
        threshold, max_delay = self.pacing_threshold_pct, self.pacing_max_delay_s
        return PacingPolicy(
            threshold_pct=env.threshold_pct if threshold is None else threshold,
            max_delay_s=env.max_delay_s if max_delay is None else max_delay,
        )

    def get_client(
        self, *, accounts: Mapping[str, str] | None = None, pacing_store: PacingStore | None = None
    ) -> ClosableInsightsSource:
        """A client for one run; `accounts` (ad account id → currency) tells the simulator each account's currency.
        Its calls are paced from the usage headers, sharing `pacing_store` (the warehouse's, so every run process
        paces together), or a store of this client alone.

        Typed as the protocol, not `MetaInsightsClient`, so a fake source (a subclass overriding this in tests)
        and the real client are interchangeable; the caller closes it."""
        return MetaInsightsClient(
            base_url=self.resolved_url(),
            access_token=self._access_token(),
            session=self.build_session(accounts),
            timeout=(self.connect_timeout_s, self.read_timeout_s),
            max_attempts=self.max_attempts,
            pacer=Pacer(pacing_store or InMemoryPacingStore(), policy=self.pacing_policy()),
        )

    def check_token(self) -> TokenInfo:
        """What Meta's `debug_token` says about the configured token (valid, expiry dates, scopes); raises a
        redacted `MetaApiError` when Meta cannot be asked, `MissingTokenError` when no token is configured."""
        session = self.build_session()
        try:
            return fetch_token_info(
                session=session,
                base_url=self.resolved_url(),
                access_token=self._access_token(),
                timeout=(
                    min(self.connect_timeout_s, TOKEN_CHECK_TIMEOUT[0]),
                    min(self.read_timeout_s, TOKEN_CHECK_TIMEOUT[1]),
                ),
            )
        finally:
            session.close()

    def _access_token(self) -> str:
        token = os.environ.get(self.token_env_var, "")
        if not token:
            if not self.uses_in_process_simulator() and not _is_loopback(self.resolved_url()):
                # Only a simulator (in process, or served on this machine) takes the placeholder token; any other
                # URL may be the real API or a proxy to it, which must never be called without a real token.
                raise MissingTokenError(
                    f"no Meta access token: set {self.token_env_var} to a system-user token with ads_read "
                    "(see README, 'Switching to the real Meta API')"
                )
            token = SIMULATOR_TOKEN
        return token


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == "localhost" or host == "::1" or host.startswith("127.")


def simulator_config(accounts: Mapping[str, str] | None) -> SimulatorConfig:
    """The simulator knows the registered ad accounts and serves each in its client's currency."""
    if not accounts:
        return SimulatorConfig()
    return SimulatorConfig(accounts={acc: AccountSpec(currency=cur) for acc, cur in accounts.items()})


def faults_from_json(raw: str) -> FaultConfig:
    """FaultConfig from JSON: lists become (code, subcode) tuples; error_rates keys are "17" or "100/1487534"."""
    data: dict[str, Any] = json.loads(raw)
    if "scripted_errors" in data:
        data["scripted_errors"] = tuple(
            tuple(e) if isinstance(e, list) else e for e in data["scripted_errors"]
        )
    if "error_rates" in data:
        rates = {}
        for key, rate in data["error_rates"].items():
            code, _, sub = str(key).partition("/")
            rates[(int(code), int(sub)) if sub else int(code)] = float(rate)
        data["error_rates"] = rates
    if isinstance(data.get("fail_page_error"), list):
        data["fail_page_error"] = tuple(data["fail_page_error"])
    return FaultConfig(**data)


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {"meta_api": MetaApiResource(), "warehouse": WarehouseResource(), "app_db": AppDatabaseResource()}
