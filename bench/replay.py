"""Replay throughput: parse -> validate -> Avro-encode, per input format.

    python bench/replay.py [--snapshots 500] [--strikes 81] [--formats dhan,nse,csv] [--path FILE]

Generates deterministic input files (fake Dhan chains; the same chains as NSE
JSON documents and as CSV rows), replays each as fast as possible and prints
snapshots/s and contracts/s.  Without a broker every snapshot is encoded with
fastavro's schemaless writer against schemas/optionchain_raw.avsc; with
KAFKA_BOOTSTRAP and SCHEMA_REGISTRY_URL set it goes through the real
KafkaPublisher instead.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro

from hftengine.codec.avro import load_schema_text, parse
from hftengine.feeds.fake_dhan import fake_chain_body
from hftengine.feeds.formats import CSV_COLUMNS, IST, DhanRecord, parse_dhan_chain, snapshot_to_csv_rows
from hftengine.feeds.formats import DEFAULT_UNDERLYINGS as UNDERLYINGS
from hftengine.feeds.publisher import Publisher
from hftengine.feeds.replay import replay
from hftengine.snapshot import ChainSnapshot


class AvroEncodingPublisher:
    """Validates like KafkaPublisher and encodes to Avro bytes, without a broker."""

    def __init__(self) -> None:
        self.schema = parse(load_schema_text("optionchain_raw"))
        self.sent = 0
        self.bytes = 0
        self.dead = 0

    def publish(self, snapshot: ChainSnapshot) -> bool:
        if snapshot.problems():
            self.dead += 1
            return False
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.schema, snapshot.to_record())
        self.bytes += buf.tell()
        self.sent += 1
        return True

    def dead_letter(self, **_: Any) -> None:
        self.dead += 1

    def flush(self, timeout: float = 30.0) -> int:
        return 0


def make_publisher() -> tuple[Publisher, str]:
    bootstrap, registry = os.environ.get("KAFKA_BOOTSTRAP"), os.environ.get("SCHEMA_REGISTRY_URL")
    if bootstrap and registry:
        from hftengine.config import Settings
        from hftengine.feeds.publisher import KafkaPublisher

        s = Settings()
        return (
            KafkaPublisher(bootstrap, registry, s.raw_topic, s.deadletter_topic, compression=s.feed_compression),
            f"Kafka {bootstrap}",
        )
    return AvroEncodingPublisher(), "fastavro schemaless_writer (no broker)"


def generate(root: Path, n: int, strikes: int) -> dict[str, Path]:
    """n snapshots in each format (NIFTY/BANKNIFTY x 2 expiries, 3 s apart)."""
    today = date(2030, 1, 1)
    expiries = [date(2030, 1, 3), date(2030, 1, 10)]
    t0 = datetime(2030, 1, 1, 3, 45, tzinfo=UTC)
    dhan, csv_path, nse_dir = root / "dhan.jsonl", root / "chain.csv", root / "nse"
    nse_dir.mkdir()
    snaps_by_ts: dict[tuple[datetime, str], list[ChainSnapshot]] = {}
    with dhan.open("w") as fd, csv_path.open("w", newline="") as fc:
        writer = csv.DictWriter(fc, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for i in range(n):
            u = UNDERLYINGS["NIFTY" if (i // 2) % 2 == 0 else "BANKNIFTY"]
            expiry = expiries[i % 2]
            ts = t0 + timedelta(seconds=3 * (i // 4))
            body = fake_chain_body(u.security_id, expiry, i // 4, today=today, n_strikes=strikes)
            fd.write(DhanRecord(ts, u.security_id, u.segment, expiry, body, u.symbol, u.lot_size, 200).to_json())
            fd.write("\n")
            snap = parse_dhan_chain(body, u, expiry, ts).snapshot
            writer.writerows(snapshot_to_csv_rows(snap))
            snaps_by_ts.setdefault((ts, u.symbol), []).append(snap)
    for k, ((ts, symbol), snaps) in enumerate(snaps_by_ts.items()):
        (nse_dir / f"{k:06d}_{symbol}.json").write_text(json.dumps(nse_document(ts, symbol, snaps)))
    return {"dhan": dhan, "nse": nse_dir, "csv": csv_path}


def nse_document(ts: datetime, symbol: str, snaps: list[ChainSnapshot]) -> dict[str, Any]:
    """The same chains in NSE's option-chain JSON shape (OI in contracts)."""
    data = []
    for s in snaps:
        exp = s.expiry.strftime("%d-%b-%Y")
        for i, k in enumerate(s.strikes.tolist()):
            entry: dict[str, Any] = {"strikePrice": k, "expiryDate": exp}
            for side, legs in (("CE", s.ce), ("PE", s.pe)):
                if not legs.present[i]:
                    continue
                oi = int(legs.oi[i]) // s.lot_size
                entry[side] = {
                    "strikePrice": k,
                    "expiryDate": exp,
                    "underlying": symbol,
                    "openInterest": oi,
                    "changeinOpenInterest": oi - int(legs.previous_oi[i]) // s.lot_size,
                    "totalTradedVolume": int(legs.volume[i]) // s.lot_size,
                    "impliedVolatility": float(legs.implied_volatility[i]),
                    "lastPrice": float(legs.last_price[i]),
                    "change": float(legs.last_price[i] - legs.previous_close_price[i]),
                    "bidQty": int(legs.top_bid_quantity[i]),
                    "bidprice": float(legs.top_bid_price[i]),
                    "askQty": int(legs.top_ask_quantity[i]),
                    "askPrice": float(legs.top_ask_price[i]),
                    "underlyingValue": s.spot,
                }
            data.append(entry)
    stamp = ts.astimezone(IST).strftime("%d-%b-%Y %H:%M:%S")
    return {
        "records": {
            "timestamp": stamp,
            "underlyingValue": snaps[0].spot,
            "data": data,
            "expiryDates": [s.expiry.strftime("%d-%b-%Y") for s in snaps],
        }
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshots", type=int, default=500)
    ap.add_argument("--strikes", type=int, default=81)
    ap.add_argument("--formats", default="dhan,nse,csv")
    ap.add_argument("--path", type=Path, help="replay this file/directory instead of generated data")
    args = ap.parse_args()

    _, how = make_publisher()
    print(f"replay throughput: parse + validate + encode via {how}")
    with tempfile.TemporaryDirectory(prefix="hft-bench-replay-") as tmp:
        if args.path:
            inputs = {"file": args.path}
        else:
            t = time.perf_counter()
            generated = generate(Path(tmp), args.snapshots, args.strikes)
            inputs = {f: generated[f] for f in args.formats.split(",")}
            print(
                f"generated {args.snapshots} snapshots x {args.strikes} strikes per format "
                f"in {time.perf_counter() - t:.1f}s"
            )
        print(
            f"{'format':<8}{'snapshots':>10}{'contracts':>11}{'seconds':>9}{'snapshots/s':>13}"
            f"{'contracts/s':>13}{'avro MB/s':>11}"
        )
        for name, path in inputs.items():
            publisher, _ = make_publisher()
            stats = replay(path, publisher, speed=None, fmt=None if name == "file" else name, progress=False)
            mb = getattr(publisher, "bytes", 0) / 1e6
            print(
                f"{name:<8}{stats.snapshots:>10}{stats.contracts:>11}{stats.elapsed_s:>9.2f}"
                f"{stats.snapshots_per_s:>13,.0f}{stats.contracts_per_s:>13,.0f}"
                f"{mb / stats.elapsed_s if stats.elapsed_s else 0:>11.1f}"
            )
            if stats.errors:
                print(f"  {len(stats.errors)} malformed line(s), first: {stats.errors[0]}", file=sys.stderr)


if __name__ == "__main__":
    main()
