"""The Meta resource never calls anything but a simulator without a real token."""

from __future__ import annotations

import pytest

from kpi_platform.defs.resources import SIMULATOR_TOKEN, MetaApiResource, MissingTokenError


@pytest.mark.parametrize(
    "url", ["https://graph.facebook.com", "https://meta-proxy.internal.example", "http://10.0.0.5:8080"]
)
def test_a_non_local_url_without_a_token_is_refused(url: str, monkeypatch) -> None:
    monkeypatch.delenv("META_ACCESS_TOKEN", raising=False)
    with pytest.raises(MissingTokenError, match="META_ACCESS_TOKEN"):
        MetaApiResource(api_url=url).get_client()


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765", "http://localhost:8765"])
def test_a_served_simulator_on_this_machine_takes_the_placeholder_token(url: str, monkeypatch) -> None:
    monkeypatch.delenv("META_ACCESS_TOKEN", raising=False)
    client = MetaApiResource(api_url=url).get_client()
    assert client._base_url == url  # noqa: SLF001 - the resolved endpoint
    assert client._token == SIMULATOR_TOKEN


def test_a_real_token_is_used_when_set(monkeypatch) -> None:
    monkeypatch.setenv("META_ACCESS_TOKEN", "EAAB-real-token")
    client = MetaApiResource(api_url="https://graph.facebook.com").get_client()
    assert client._token == "EAAB-real-token"
