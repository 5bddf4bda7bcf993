"""The chain sink on a real PostgreSQL: COPY correctness, NULLs, idempotency."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from hftengine.storage.sink import PostgresChainStore
from tests.factories import enriched_for, make_chain

T0 = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)


@pytest.fixture
def store(migrated_dsn: str) -> Iterator[PostgresChainStore]:
    with PostgresChainStore(migrated_dsn) as s:
        yield s


def count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def test_rows_match_the_snapshot(migrated_dsn: str) -> None:
    snap = make_chain(n_strikes=11, ts=T0)
    present = np.ones(11, dtype=bool)
    present[2] = False
    snap = type(snap)(**{**{f: getattr(snap, f) for f in snap.__dataclass_fields__},
                         "pe": snap.pe.replace(present=present)})
    with PostgresChainStore(migrated_dsn) as store:
        result = store.write([enriched_for(snap)])
    assert (result.chains_written, result.quote_rows) == (1, 21)
    with psycopg.connect(migrated_dsn) as conn:
        rows = conn.execute(
            "SELECT strike, option_type, security_id, last_price, bid, ask, oi, iv, delta, gamma, gex, buildup, "
            "expiry, ts, underlying FROM option_quotes ORDER BY option_type, strike").fetchall()
        metrics = conn.execute(
            "SELECT pcr_oi, pcr_volume, gamma_flip, call_wall, put_wall, quality_flags, n_contracts, "
            "conventions_version FROM chain_metrics").fetchone()
        latest = conn.execute("SELECT underlying, expiry, ts FROM chain_latest").fetchall()
        und = conn.execute("SELECT symbol, security_id, segment, lot_size FROM underlyings").fetchall()
    ce = [r for r in rows if r[1] == "CE"]
    pe = [r for r in rows if r[1] == "PE"]
    assert len(ce) == 11 and len(pe) == 10
    assert snap.strikes[2] not in [r[0] for r in pe]
    for i, r in enumerate(ce):
        assert r[0] == snap.strikes[i]
        assert r[2] == snap.ce.security_id[i]
        assert r[3] == pytest.approx(snap.ce.last_price[i])
        assert r[4] == pytest.approx(snap.ce.top_bid_price[i])
        assert r[6] == snap.ce.oi[i]
        assert r[7] == pytest.approx(snap.ce.implied_volatility[i] / 100)
        assert r[8] is None  # NaN delta stored as NULL
        assert r[9] == pytest.approx(1e-4)
        assert r[10] == pytest.approx(1e-4 * snap.ce.oi[i] * snap.spot**2 * 0.01)  # shares: no lot multiplier
        assert r[11] == 1
        assert r[12] == snap.expiry and r[13] == T0 and r[14] == "NIFTY"
    assert pe[0][10] < 0  # puts carry negative GEX
    pcr, pcr_vol, flip, cwall, pwall, flags, n, conv = metrics
    assert pcr == pytest.approx(snap.pe.oi.sum() / snap.ce.oi.sum())
    assert pcr_vol is None and flip is None and pwall is None
    assert cwall == snap.strikes[-1]
    assert flags == ["one_sided_legs"] and n == 21 and conv == "test"
    assert latest == [("NIFTY", snap.expiry, T0)]
    assert und == [("NIFTY", 13, "IDX_I", 75)]


def test_contracts_unit_scales_gex_by_lot(migrated_dsn: str) -> None:
    snap = make_chain(n_strikes=3, ts=T0, oi_unit="contracts", lot_size=75)
    with PostgresChainStore(migrated_dsn) as store:
        store.write([enriched_for(snap)])
    with psycopg.connect(migrated_dsn) as conn:
        gex = conn.execute("SELECT gex FROM option_quotes WHERE option_type='CE' ORDER BY strike").fetchall()
    assert gex[0][0] == pytest.approx(1e-4 * snap.ce.oi[0] * 75 * snap.spot**2 * 0.01)


def test_replay_adds_no_rows(store: PostgresChainStore, migrated_dsn: str) -> None:
    batch = [enriched_for(make_chain(ts=T0 + timedelta(seconds=i), seed=i)) for i in range(5)]
    first = store.write(batch)
    assert first.chains_written == 5
    rows = count(migrated_dsn, "option_quotes")
    again = store.write(batch + batch)  # replayed batch, duplicated inside the batch too
    assert (again.chains_written, again.chains_duplicate, again.quote_rows) == (0, 10, 0)
    assert count(migrated_dsn, "option_quotes") == rows
    assert count(migrated_dsn, "chain_metrics") == 5
    # a batch mixing old and new only writes the new one
    mixed = store.write(batch[:2] + [enriched_for(make_chain(ts=T0 + timedelta(seconds=99)))])
    assert mixed.chains_written == 1
    assert count(migrated_dsn, "chain_metrics") == 6


def test_concurrent_writers_of_the_same_chains(migrated_dsn: str) -> None:
    batch = [enriched_for(make_chain(ts=T0 + timedelta(seconds=i), seed=i)) for i in range(20)]
    results = []

    def run() -> None:
        with PostgresChainStore(migrated_dsn) as store:
            results.append(store.write(batch))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.chains_written for r in results) == 20
    assert count(migrated_dsn, "chain_metrics") == 20
    assert count(migrated_dsn, "option_quotes") == 20 * 42


def test_chain_latest_only_moves_forward(store: PostgresChainStore, migrated_dsn: str) -> None:
    store.write([enriched_for(make_chain(ts=T0 + timedelta(seconds=10)))])
    store.write([enriched_for(make_chain(ts=T0))])  # late, older snapshot
    with psycopg.connect(migrated_dsn) as conn:
        ts = conn.execute("SELECT ts FROM chain_latest").fetchone()
    assert ts is not None and ts[0] == T0 + timedelta(seconds=10)


def test_dead_letters_are_stored_once(store: PostgresChainStore, migrated_dsn: str) -> None:
    letter = {"failed_ts": T0, "stage": "decode", "error_type": "malformed_avro", "reason": "bad",
              "source_topic": "optionchain.raw", "source_partition": 0, "source_offset": 7, "schema_id": None,
              "underlying": None, "key": b"NIFTY", "value": b"\x00junk", "dlq_partition": 0, "dlq_offset": 3}
    store.write_dead_letters([letter])
    store.write_dead_letters([letter])
    assert count(migrated_dsn, "dead_letters") == 1


def test_nan_metrics_become_null(migrated_dsn: str) -> None:
    rec = enriched_for(make_chain(ts=T0))
    rec["max_pain"] = math.nan
    rec["total_gex"] = math.inf
    with PostgresChainStore(migrated_dsn) as store:
        store.write([rec])
    with psycopg.connect(migrated_dsn) as conn:
        row = conn.execute("SELECT max_pain, total_gex FROM chain_metrics").fetchone()
    assert row == (None, None)


def duplicate_quotes(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT underlying, expiry, ts, strike, option_type, count(*) FROM option_quotes "
            "GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1").fetchall()


def test_no_duplicate_quotes_under_replay_and_concurrent_writers(migrated_dsn: str) -> None:
    """option_quotes has no unique index: the write path alone keeps each contract-snapshot unique."""
    snaps = [enriched_for(make_chain(ts=T0 + timedelta(seconds=i), seed=i)) for i in range(30)]
    # overlapping batches, written by 4 threads at once, each thread replaying its batches
    batches = [snaps[i:i + 12] for i in range(0, 30, 6)]
    errors: list[BaseException] = []

    def run(offset: int) -> None:
        try:
            with PostgresChainStore(migrated_dsn) as store:
                for b in batches[offset:] + batches[:offset]:
                    store.write(b)
                    store.write(list(reversed(b)))  # replay, other order
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with PostgresChainStore(migrated_dsn, rollup_mode="deferred") as store:
        assert store.write(snaps).chains_written == 0  # a full replay later adds nothing
    assert duplicate_quotes(migrated_dsn) == []
    assert count(migrated_dsn, "chain_metrics") == 30
    assert count(migrated_dsn, "option_quotes") == 30 * 42


def test_gex_profile_is_a_view_over_the_legs(migrated_dsn: str) -> None:
    snap = make_chain(n_strikes=5, ts=T0)
    present = np.ones(5, dtype=bool)
    present[1] = False
    snap = type(snap)(**{**{f: getattr(snap, f) for f in snap.__dataclass_fields__},
                         "pe": snap.pe.replace(present=present)})
    rec = enriched_for(snap)
    with PostgresChainStore(migrated_dsn) as store:
        store.write([rec])
    with psycopg.connect(migrated_dsn) as conn:
        rows = conn.execute("SELECT strike, spot, net_gex, call_gex, put_gex, ts, underlying, expiry "
                            "FROM gex_profile ORDER BY strike").fetchall()
    assert [r[0] for r in rows] == list(snap.strikes)
    for i, (_, spot, net, call, put, ts, und, expiry) in enumerate(rows):
        assert (spot, ts, und, expiry) == (pytest.approx(snap.spot), T0, "NIFTY", snap.expiry)
        assert call == pytest.approx(rec["ce_analytics"]["gex"][i])
        if i == 1:
            assert put is None and net == pytest.approx(call)
        else:
            assert put == pytest.approx(rec["pe_analytics"]["gex"][i])
            assert net == pytest.approx(call + put)


def test_instruments_follow_the_listing(migrated_dsn: str) -> None:
    """One row per listed leg; a relisted contract takes the newest security id and keeps its
    earliest first_seen, in one batch or across batches; a replay changes nothing."""
    first = make_chain(n_strikes=5, ts=T0)
    present = np.ones(5, dtype=bool)
    present[4] = False
    first = replace(first, pe=first.pe.replace(present=present))
    later = replace(first, exchange_ts=T0 + timedelta(seconds=5), received_ts=T0 + timedelta(seconds=5),
                    pe=first.pe.replace(present=np.ones(5, dtype=bool), security_id=first.pe.security_id + 1000))
    newest = replace(later, exchange_ts=T0 + timedelta(seconds=9), received_ts=T0 + timedelta(seconds=9),
                     ce=later.ce.replace(security_id=later.ce.security_id + 7))

    def listing() -> dict[tuple[float, str], tuple[int, datetime]]:
        with psycopg.connect(migrated_dsn) as conn:
            rows = conn.execute("SELECT strike, option_type, security_id, first_seen FROM instruments").fetchall()
        return {(k, t): (sid, ts) for k, t, sid, ts in rows}

    with PostgresChainStore(migrated_dsn) as store:
        store.write([enriched_for(later), enriched_for(first)])  # one batch, out of order
        got = listing()
        assert len(got) == 10
        for i, k in enumerate(first.strikes):
            assert got[(k, "CE")] == (first.ce.security_id[i], T0)
            seen = T0 if i < 4 else T0 + timedelta(seconds=5)  # the fifth put is listed from `later` on
            assert got[(k, "PE")] == (later.pe.security_id[i], seen)
        store.write([enriched_for(newest)])
        after = listing()
    for i, k in enumerate(first.strikes):
        assert after[(k, "CE")] == (newest.ce.security_id[i], T0)
        assert after[(k, "PE")] == got[(k, "PE")]
    with PostgresChainStore(migrated_dsn) as replaying:  # a restarted sink replays the batches
        replaying.write([enriched_for(first), enriched_for(newest)])
    assert listing() == after
