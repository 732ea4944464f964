"""A daily token check recorded straight into an instance, as `meta_token_check_sensor` records it."""

from __future__ import annotations

from datetime import datetime

import dagster as dg

from kpi_platform.meta.token_check import TokenInfo, assess
from kpi_platform.operations.token_watch import TOKEN_ASSET_PATH, record_metadata

#: A system user's token that never expires, with the scope collection needs.
LASTING_TOKEN = TokenInfo(
    is_valid=True,
    expires_at=None,
    data_access_expires_at=None,
    scopes=("ads_read",),
    token_type="SYSTEM_USER",
)


def record_token_check(instance: dg.DagsterInstance, at: datetime, info: TokenInfo = LASTING_TOKEN) -> None:
    """Meta's answer `info`, as asked at `at`: the observation the health report's `token` check reads."""
    instance.report_runless_asset_event(
        dg.AssetObservation(
            asset_key=dg.AssetKey(list(TOKEN_ASSET_PATH)), metadata=record_metadata(assess(info, at), at)
        )
    )
