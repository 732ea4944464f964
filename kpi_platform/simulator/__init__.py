"""A local Meta Marketing API that speaks graph.facebook.com's Insights HTTP API with deterministic data and fault
injection, reachable as a WSGI app, an in-process `requests` adapter, or a real HTTP server.

Read module by module it documents how the API behaves: `data` is the data Meta returns (numbers as strings,
nested action types, days without delivery have no rows); `graph_api` how it pages (`paging.next` only while more
rows exist), how async report runs progress, what `debug_token` says about a token, and how it fails (error envelope, HTTP status per code, usage
headers, and the rate limits usage counts against); `faults` what can be injected (error codes, dropped sockets, timeouts, malformed bodies, requests that hang); `app` the WSGI
application that routes each request and holds the state; `transport` the requests adapter and the HTTP server.
Every response carries `X-KPI-Simulator: 1`, so rows fetched from here are never mistaken for real data.

Other code imports these names from the package itself, so how it is split into modules stays internal.
"""

from kpi_platform.simulator.app import MetaSimulator, SimulatorConfig
from kpi_platform.simulator.data import AccountSpec, campaigns, day_deliveries, is_idle_day
from kpi_platform.simulator.faults import FaultConfig
from kpi_platform.simulator.graph_api import InsightsQuery, RateLimits
from kpi_platform.simulator.transport import mount_simulator, run_forever, serve

__all__ = [
    "AccountSpec",
    "FaultConfig",
    "InsightsQuery",
    "MetaSimulator",
    "RateLimits",
    "SimulatorConfig",
    "campaigns",
    "day_deliveries",
    "is_idle_day",
    "mount_simulator",
    "run_forever",
    "serve",
]
