"""DhanClient error classification and secret hygiene, against the fake app in-process (ASGI)."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from hftengine.config import Settings
from hftengine.feeds.dhan import (
    DhanAuthError,
    DhanClient,
    DhanFeedConfig,
    DhanPoller,
    DhanRateLimited,
    DhanRecorder,
    DhanRequestFailed,
    DhanServerError,
    DhanTransportError,
)
from hftengine.feeds.fake_dhan import FakeDhan, FakeDhanConfig, create_fake_dhan_app
from hftengine.feeds.formats import DEFAULT_UNDERLYINGS
from hftengine.feeds.ratelimit import TokenBucket
from tests.factories import RecordingPublisher

NIFTY = DEFAULT_UNDERLYINGS["NIFTY"]
EXPIRY = date(2030, 1, 3)
# obviously-fake test credentials that must never show up in logs, reprs or recordings
CLIENT_ID = "cid-7f3a9e21"
TOKEN = "tok-SECRET-d41d8cd98f00b204e980"  # noqa: S105


def make_client(fake: FakeDhan, client_id: str = CLIENT_ID, token: str = TOKEN) -> DhanClient:
    transport = httpx.ASGITransport(app=create_fake_dhan_app(fake))
    return DhanClient(
        SecretStr(client_id),
        SecretStr(token),
        base_url="http://fake-dhan",
        bucket=TokenBucket(1000.0, 1),
        transport=transport,
    )


def make_fake(**changes: object) -> FakeDhan:
    return FakeDhan(FakeDhanConfig(client_id=CLIENT_ID, access_token=TOKEN).with_changes(**changes))


async def test_expiry_list_and_option_chain() -> None:
    fake = make_fake(expiries=[EXPIRY, EXPIRY + timedelta(days=7)])
    async with make_client(fake) as client:
        assert await client.expiry_list(NIFTY) == [EXPIRY, EXPIRY + timedelta(days=7)]
        resp = await client.option_chain(NIFTY, EXPIRY)
    assert resp.http_status == 200 and resp.body["status"] == "success"
    assert resp.received_ts.tzinfo is not None
    assert len(resp.body["data"]["oc"]) == 21
    seen = fake.requests()
    assert [r.path for r in seen] == ["/v2/optionchain/expirylist", "/v2/optionchain"]
    assert seen[1].security_id == 13 and seen[1].segment == "IDX_I" and seen[1].expiry == EXPIRY.isoformat()


@pytest.mark.parametrize(
    ("changes", "error", "retryable"),
    [
        ({"rate_limit": {"every": 1}}, DhanRateLimited, True),
        ({"rate_limit": {"every": 1}, "rate_limit_http_status": 200}, DhanRateLimited, True),  # 805 in a 200
        ({"server_error": {"every": 1}}, DhanServerError, True),
        ({"server_error": {"every": 1}, "server_error_http_status": 500}, DhanServerError, True),
        ({"outage": True}, DhanServerError, True),
        ({"failure": {"every": 1}}, DhanRequestFailed, False),
    ],
)
async def test_errors_are_classified(changes: dict[str, object], error: type[Exception], retryable: bool) -> None:
    async with make_client(make_fake(**changes)) as client:
        with pytest.raises(error) as info:
            await client.option_chain(NIFTY, EXPIRY)
    assert info.value.retryable is retryable  # type: ignore[attr-defined]


async def test_failure_status_keeps_the_body_for_dead_lettering() -> None:
    async with make_client(make_fake(failure={"every": 1})) as client:
        with pytest.raises(DhanRequestFailed) as info:
            await client.option_chain(NIFTY, EXPIRY)
    assert info.value.code == "811" and info.value.http_status == 400
    assert info.value.body["status"] == "failure" and info.value.received_ts is not None


async def test_missing_or_wrong_credentials_are_auth_errors() -> None:
    fake = make_fake()
    async with make_client(fake, token="wrong-token") as client:  # noqa: S106
        with pytest.raises(DhanAuthError) as info:
            await client.option_chain(NIFTY, EXPIRY)
    assert info.value.http_status == 401 and info.value.retryable is False
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_fake_dhan_app(fake)), base_url="http://fake-dhan"
    ) as raw:
        resp = await raw.post(
            "/v2/optionchain",
            json={"UnderlyingScrip": 13, "UnderlyingSeg": "IDX_I", "Expiry": EXPIRY.isoformat()},
        )
    assert resp.status_code == 401 and resp.json()["status"] == "failure"
    assert [r.outcome for r in fake.requests()] == ["unauthorized", "unauthorized"]


async def test_timeouts_and_connection_errors_are_retryable_transport_errors() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    for handler in (timeout, refused):
        client = DhanClient(
            CLIENT_ID,
            TOKEN,
            base_url="http://x",
            bucket=TokenBucket(1000, 1),
            transport=httpx.MockTransport(handler),
        )
        async with client:
            with pytest.raises(DhanTransportError) as info:
                await client.option_chain(NIFTY, EXPIRY)
        assert info.value.retryable


async def test_retry_after_header_is_read() -> None:
    def limited(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429,
            headers={"Retry-After": "2"},
            json={"status": "failure", "data": "", "remarks": {"error_code": "805"}},
        )

    async with DhanClient(
        CLIENT_ID,
        TOKEN,
        base_url="http://x",
        bucket=TokenBucket(1000, 1),
        transport=httpx.MockTransport(limited),
    ) as client:
        with pytest.raises(DhanRateLimited) as info:
            await client.option_chain(NIFTY, EXPIRY)
    assert info.value.retry_after == 2.0 and info.value.code == "805"


async def test_credentials_never_appear_in_logs_reprs_errors_or_recordings(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)  # everything, including httpx/httpcore debug output
    fake = make_fake(rate_limit={"requests": [2]}, failure={"requests": [4]}, server_error={"requests": [5]})
    pub = RecordingPublisher()
    cfg = DhanFeedConfig(max_attempts=2, backoff_base_s=0.001, backoff_max_s=0.002, seed=1)
    texts: list[str] = []
    with DhanRecorder(tmp_path / "rec.jsonl") as recorder:
        async with make_client(fake) as client:
            poller = DhanPoller(
                client, pub, [NIFTY], [EXPIRY], config=cfg, recorder=recorder, registry=CollectorRegistry()
            )
            await poller.run(max_polls=5)
            texts += [repr(client), str(client.__dict__), repr(poller), repr(poller.stats), repr(recorder)]
        async with make_client(fake, token="another-secret-value") as bad:  # noqa: S106
            with pytest.raises(DhanAuthError) as info:
                await bad.option_chain(NIFTY, EXPIRY)
            texts += [str(info.value), repr(info.value), repr(bad)]
            bad_poller = DhanPoller(bad, pub, [NIFTY], [EXPIRY], config=cfg, registry=CollectorRegistry())
            await bad_poller.run(max_polls=1)
    settings = Settings(_env_file=None, dhan_client_id=SecretStr(CLIENT_ID), dhan_access_token=SecretStr(TOKEN))  # type: ignore[call-arg]
    texts += [repr(settings), str(settings), settings.model_dump_json()]
    texts += [caplog.text, (tmp_path / "rec.jsonl").read_text()]
    texts += [d.reason for d in pub.dead] + [(d.value or b"").decode(errors="replace") for d in pub.dead]
    assert any("authentication failed" in d.reason for d in pub.dead)  # the error is reported ...
    assert pub.published and caplog.records
    for text in texts:  # ... but no secret is, anywhere
        assert TOKEN not in text
        assert CLIENT_ID not in text
        assert "another-secret-value" not in text


async def test_unexpected_errors_are_counted_and_never_wedge_the_breaker() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("boom")

    registry = CollectorRegistry()
    pub = RecordingPublisher()
    client = DhanClient(
        CLIENT_ID, TOKEN, base_url="http://x", bucket=TokenBucket(1000, 1), transport=httpx.MockTransport(broken)
    )
    async with client:
        poller = DhanPoller(client, pub, [NIFTY], [EXPIRY], config=DhanFeedConfig(), registry=registry)
        stats = await poller.run(max_polls=2)
    assert stats.gave_up == 2 and stats.errors == {"unexpected_error": 2}
    assert [d.error_type for d in pub.dead] == ["fetch_failed", "fetch_failed"]
    assert "unexpected error RuntimeError: boom" in pub.dead[0].reason
    assert poller.breaker.allow()  # closed, 2 < threshold
