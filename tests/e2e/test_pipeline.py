"""End to end: simulator → raw topic → enrich → sink → database → API, plus bad input."""

from __future__ import annotations

import struct
from pathlib import Path

import httpx
import numpy as np
import pytest

from hftengine.api import create_api
from hftengine.codec.avro import AvroSerializer, load_schema_text, make_registry_client, subject_for
from hftengine.feeds.publisher import KafkaPublisher
from hftengine.feeds.simulator import MarketSimulator
from hftengine.runtime.serve import UvicornThread
from hftengine.snapshot import ChainSnapshot
from tests.e2e.conftest import Pipeline
from tests.factories import make_chain

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def publisher_for(p: Pipeline) -> KafkaPublisher:
    return KafkaPublisher.for_settings(p.settings)


def test_simulated_chains_reach_the_api_enriched(pipeline: Pipeline, tmp_path: Path) -> None:
    pub = publisher_for(pipeline)
    sim = MarketSimulator(seed=11, underlyings=["NIFTY", "BANKNIFTY"], strikes_per_side=20,
                          expiries_per_underlying=2)
    snaps: list[ChainSnapshot] = []
    for _ in range(3):
        for snap in sim.step():
            assert pub.publish(snap)
            snaps.append(snap)
    assert pub.flush(30) == 0
    pipeline.start_worker(tmp_path / "tables")
    pipeline.wait_for(
        f"{len(snaps)} chains stored",
        lambda: pipeline.query("SELECT count(*) FROM chain_metrics")[0][0] == len(snaps),
    )
    contracts = sum(s.n_contracts for s in snaps)
    assert pipeline.query("SELECT count(*) FROM option_quotes")[0][0] == contracts

    # the worker's own Prometheus metrics, on its web port
    worker_metrics = httpx.get(f"http://127.0.0.1:{pipeline.env['HFT_WORKER_WEB_PORT']}/metrics", timeout=10)
    assert worker_metrics.status_code == 200, worker_metrics.text
    assert worker_metrics.headers["content-type"].startswith("text/plain")
    assert f"hft_contracts_enriched_total {float(contracts)}" in worker_metrics.text
    assert "hft_sink_batch_seconds_count" in worker_metrics.text

    last_nifty = max((s for s in snaps if s.underlying == "NIFTY"),
                     key=lambda s: (s.exchange_ts, -s.expiry.toordinal()))
    with UvicornThread(create_api(pipeline.settings)) as api:
        client = httpx.Client(base_url=api.url, timeout=10)
        unds = client.get("/v1/underlyings").json()
        assert {u["symbol"] for u in unds["underlyings"]} == {"NIFTY", "BANKNIFTY"}

        for ident in ("NIFTY", "nifty", "13"):
            r = client.get(f"/v1/option-chain/{ident}/latest", params={"expiry": last_nifty.expiry.isoformat()})
            assert r.status_code == 200, r.text
        chain = r.json()
        assert chain["underlying"] == "NIFTY"
        m = chain["metrics"]
        assert m["spot"] == pytest.approx(last_nifty.spot)
        assert m["pcr_oi"] == pytest.approx(last_nifty.pe.oi.sum() / last_nifty.ce.oi.sum())
        assert m["max_pain"] in set(last_nifty.strikes.tolist())
        assert m["conventions_version"]
        strikes = chain["strikes"]
        assert [s["strike"] for s in strikes] == last_nifty.strikes.tolist()
        atm = min(strikes, key=lambda s: abs(s["strike"] - last_nifty.spot))
        for leg in ("ce", "pe"):
            assert 0.03 < atm[leg]["iv"] < 1.5
            assert atm[leg]["gamma"] > 0
            assert abs(atm[leg]["delta"]) < 1
        assert atm["ce"]["delta"] > 0 > atm["pe"]["delta"]
        # engine IV agrees with the simulator's (broker-style) IV near the money
        assert atm["ce"]["iv"] == pytest.approx(atm["ce"]["broker_iv"] / 100, abs=0.02)

        # default expiry = nearest with data
        assert client.get("/v1/option-chain/NIFTY/latest").status_code == 200
        latest = client.get("/v1/analytics/NIFTY/metrics/latest").json()
        assert len(latest["metrics"]) == 2
        hist = client.get("/v1/analytics/BANKNIFTY/metrics/history", params={
            "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}).json()
        assert hist["count"] == sum(1 for s in snaps if s.underlying == "BANKNIFTY")
        assert client.get("/v1/option-chain/NOPE/latest").status_code == 404
        bad = client.get("/v1/analytics/NIFTY/metrics/history", params={"from": "2026-01-01T00:00:00"})
        assert bad.status_code == 422 and "timezone" in bad.text
        ready = client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert client.get("/health/live").json() == {"status": "ok"}
        assert "hft_" in client.get("/metrics").text or client.get("/metrics").status_code == 200
        assert client.get("/openapi.json").status_code == 200


def test_bad_input_is_dead_lettered_and_good_data_kept(pipeline: Pipeline, tmp_path: Path) -> None:
    s = pipeline.settings
    pub = publisher_for(pipeline)
    registry = make_registry_client(s.registry_url())
    raw_ser = AvroSerializer(registry, subject_for(s.raw_topic), load_schema_text("optionchain_raw"))

    good = [make_chain(seed=i, ts=make_chain().exchange_ts.replace(second=i)) for i in range(6)]
    nan_chain = make_chain(seed=99, ts=good[0].exchange_ts.replace(minute=59))
    lp = nan_chain.ce.last_price.copy()
    lp[4] = np.nan
    nan_chain = ChainSnapshot(**{**{f: getattr(nan_chain, f) for f in nan_chain.__dataclass_fields__},
                                 "ce": nan_chain.ce.replace(last_price=lp)})
    neg_chain = make_chain(seed=98, ts=good[0].exchange_ts.replace(minute=58))
    bid = neg_chain.pe.top_bid_price.copy()
    bid[2] = -3.0
    neg_chain = ChainSnapshot(**{**{f: getattr(neg_chain, f) for f in neg_chain.__dataclass_fields__},
                                 "pe": neg_chain.pe.replace(top_bid_price=bid)})

    malformed = struct.pack(">bI", 0, raw_ser.schema_id) + b"\x02\x41\xff\xfe garbage"
    unknown_id = struct.pack(">bI", 0, 987654) + raw_ser.encode(good[0].to_record())[5:]
    sequence: list[bytes] = [
        raw_ser.encode(good[0].to_record()), malformed,
        raw_ser.encode(good[1].to_record()), unknown_id,
        raw_ser.encode(good[2].to_record()), raw_ser.encode(nan_chain.to_record()),
        raw_ser.encode(good[3].to_record()), raw_ser.encode(neg_chain.to_record()),
        raw_ser.encode(good[4].to_record()), raw_ser.encode(good[5].to_record()),
    ]
    for value in sequence:
        pub.publish_encoded(b"NIFTY", value)  # bypass feed-side validation on purpose
    assert pub.flush(30) == 0

    pipeline.start_worker(tmp_path / "tables", via_faust=True)  # the plain faust CLI entry point works too
    pipeline.wait_for("good chains stored and 4 dead letters",
                      lambda: pipeline.query("SELECT count(*) FROM chain_metrics")[0][0] == 6
                      and pipeline.query("SELECT count(*) FROM dead_letters")[0][0] == 4)
    letters = pipeline.query(
        "SELECT stage, error_type, reason, source_topic, source_offset FROM dead_letters ORDER BY source_offset")
    kinds = {(stage, etype) for stage, etype, *_ in letters}
    assert kinds == {("decode", "malformed_avro"), ("decode", "unknown_schema_id"), ("validate", "invalid_chain")}
    reasons = " | ".join(str(r[2]) for r in letters)
    assert "987654" in reasons
    assert "ce.last_price is NaN/inf or negative" in reasons
    assert "pe.top_bid_price is NaN/inf or negative" in reasons
    assert all(r[3] == s.raw_topic and r[4] is not None for r in letters)
    stored = {r[0] for r in pipeline.query("SELECT ts FROM chain_metrics")}
    assert stored == {g.exchange_ts for g in good}
    assert pipeline.query("SELECT count(*) FROM option_quotes")[0][0] == sum(g.n_contracts for g in good)
