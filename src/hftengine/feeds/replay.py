"""Replay recorded option chains into a ``Publisher`` (``hftengine replay`` / ``hftengine backfill``).

Formats (layouts in ``docs/feeds.md``; chosen by ``fmt`` or the file suffix,
``.gz`` allowed):

* ``dhan`` (``.jsonl``/``.ndjson``): one recorded DhanHQ response per line, as
  the Dhan feed's recording mode writes them;
* ``nse`` (``.json``): one NSE option-chain document per file, split into one
  snapshot per expiry;
* ``csv`` (``.csv``): one row per contract, grouped into snapshots.

Pace: ``speed=1`` replays at the original pace (from the data's timestamps),
``speed=N`` N times faster, ``speed=None`` (or 0/inf) as fast as possible —
that is ``backfill``.  A malformed line is reported with ``file:line``,
dead-lettered (``stage="feed"``, ``error_type="malformed_input"``) and
skipped; the rest of the file is ingested.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import sys
import time
from collections import Counter as TallyCounter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Final, Literal

from tqdm import tqdm

from hftengine.feeds.dhan import publish_dhan_body
from hftengine.feeds.formats import (
    DEFAULT_UNDERLYINGS,
    CsvContract,
    DhanRecord,
    DhanUnderlying,
    assemble_csv_snapshot,
    check_csv_header,
    parse_csv_row,
    parse_nse_chain,
)
from hftengine.feeds.publisher import Publisher
from hftengine.snapshot import ChainSnapshot

log = logging.getLogger(__name__)

ReplayFormat = Literal["dhan", "nse", "csv"]
FORMATS: Final = ("dhan", "nse", "csv")
_SUFFIX_FORMAT: Final = {".jsonl": "dhan", ".ndjson": "dhan", ".json": "nse", ".csv": "csv"}
MAX_RAW_BYTES: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class ReplayError:
    """A malformed input line (``line`` is 1-based; None when the file has no line to blame)."""

    path: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}" if self.line is not None else f"{self.path}: {self.reason}"


@dataclass(slots=True)
class ReplayStats:
    """What a replay did.  ``snapshots``/``contracts`` count what the publisher accepted."""

    files: int = 0
    records: int = 0
    snapshots: int = 0
    contracts: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    errors: list[ReplayError] = field(default_factory=list)
    defects: TallyCounter[str] = field(default_factory=TallyCounter)
    elapsed_s: float = 0.0
    first_ts: datetime | None = None
    last_ts: datetime | None = None

    @property
    def snapshots_per_s(self) -> float:
        return self.snapshots / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def contracts_per_s(self) -> float:
        return self.contracts / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.files} file(s), {self.records} record(s): {self.snapshots} snapshots / "
            f"{self.contracts} contracts published, {self.rejected} rejected, {self.dead_lettered} "
            f"dead-lettered, {len(self.errors)} malformed in {self.elapsed_s:.2f}s "
            f"({self.snapshots_per_s:,.0f} snapshots/s, {self.contracts_per_s:,.0f} contracts/s)"
        )


# --------------------------------------------------------------------------- items
@dataclass(frozen=True, slots=True)
class _Snapshot:
    snapshot: ChainSnapshot

    @property
    def ts(self) -> datetime:
        return self.snapshot.exchange_ts


@dataclass(frozen=True, slots=True)
class _Dhan:
    record: DhanRecord
    underlying: DhanUnderlying

    @property
    def ts(self) -> datetime:
        return self.record.received_ts


@dataclass(frozen=True, slots=True)
class _Malformed:
    error: ReplayError
    raw: bytes | None = None


@dataclass(frozen=True, slots=True)
class _Progress:
    records: int


_Item = _Snapshot | _Dhan | _Malformed | _Progress


def detect_format(path: str | Path) -> ReplayFormat:
    """Format from the suffix (``.gz`` ignored): .jsonl/.ndjson dhan, .json nse, .csv csv."""
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    fmt = _SUFFIX_FORMAT.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise ValueError(f"cannot tell the format of {p.name}; pass fmt= one of {', '.join(FORMATS)}")
    return fmt  # type: ignore[return-value]


def _open_text(path: Path) -> IO[str]:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _expand(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.is_file() and _known(f)))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such replay file or directory: {p}")
    return out


def _known(path: Path) -> bool:
    try:
        detect_format(path)
    except ValueError:
        return False
    return True


def _count_lines(path: Path) -> int:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    n = 0
    last = b"\n"
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (0 if last == b"\n" else 1)


# --------------------------------------------------------------------------- readers
def _dhan_items(path: Path, underlyings: Mapping[str, DhanUnderlying]) -> Iterator[_Item]:
    name = str(path)
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            yield _Progress(1)
            text = line.strip()
            if not text:
                continue
            try:
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
                record = DhanRecord.from_obj(obj)
                underlying = record.underlying(underlyings)
            except ValueError as exc:
                yield _Malformed(ReplayError(name, lineno, str(exc)), text.encode()[:MAX_RAW_BYTES])
                continue
            yield _Dhan(record, underlying)


def _nse_items(path: Path, underlyings: Mapping[str, DhanUnderlying]) -> Iterator[_Item]:
    name = str(path)
    with _open_text(path) as f:
        text = f.read()
    yield _Progress(max(1, text.count("\n") + (0 if text.endswith("\n") else 1)))
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        yield _Malformed(
            ReplayError(name, exc.lineno, f"invalid JSON ({exc.msg} at column {exc.colno})"),
            text.encode()[:MAX_RAW_BYTES],
        )
        return
    try:
        parsed = parse_nse_chain(doc, underlyings=underlyings)
    except ValueError as exc:
        yield _Malformed(ReplayError(name, None, str(exc)), text.encode()[:MAX_RAW_BYTES])
        return
    for reason in parsed.errors:
        yield _Malformed(ReplayError(name, None, reason))
    for snap in parsed.snapshots:
        yield _Snapshot(snap)


def _csv_items(path: Path) -> Iterator[_Item]:
    name = str(path)
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        try:
            check_csv_header(reader.fieldnames)
        except ValueError as exc:
            yield _Malformed(ReplayError(name, 1, str(exc)))
            return
        yield _Progress(1)
        pending_ts: datetime | None = None
        groups: dict[tuple[str, str], list[CsvContract]] = {}
        seen: set[tuple[str, str, float, str]] = set()

        def flush() -> Iterator[_Item]:
            for key in sorted(groups):
                yield _Snapshot(assemble_csv_snapshot(groups[key]))
            groups.clear()
            seen.clear()

        line_end = 1
        while True:
            line_start = line_end + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                line_end = reader.line_num
                yield _Progress(max(1, line_end - line_start + 1))
                yield _Malformed(ReplayError(name, line_start, f"CSV error: {exc}"))
                continue
            line_end = reader.line_num
            yield _Progress(max(1, line_end - line_start + 1))
            try:
                contract = parse_csv_row(row)
                if pending_ts is not None and contract.ts != pending_ts:
                    yield from flush()
                pending_ts = contract.ts
                group_key = (contract.underlying, contract.expiry.isoformat())
                ident = (*group_key, contract.strike, contract.option_type)
                if ident in seen:
                    raise ValueError(f"duplicate {contract.option_type} {contract.strike:g} in this snapshot")
                group = groups.get(group_key)
                if group:
                    first = group[0]
                    if (first.spot, first.lot_size, first.oi_unit) != (
                        contract.spot,
                        contract.lot_size,
                        contract.oi_unit,
                    ):
                        raise ValueError("spot/lot_size/oi_unit differ from earlier rows of this snapshot")
            except ValueError as exc:
                raw = ",".join("" if v is None else str(v) for v in row.values() if not isinstance(v, list))
                yield _Malformed(ReplayError(name, line_start, str(exc)), raw.encode()[:MAX_RAW_BYTES])
                continue
            seen.add(ident)
            groups.setdefault(group_key, []).append(contract)
        yield from flush()


def _items(path: Path, fmt: ReplayFormat, underlyings: Mapping[str, DhanUnderlying]) -> Iterator[_Item]:
    if fmt == "dhan":
        return _dhan_items(path, underlyings)
    if fmt == "nse":
        return _nse_items(path, underlyings)
    return _csv_items(path)


# --------------------------------------------------------------------------- replay
def replay(
    path: str | Path | Sequence[str | Path],
    publisher: Publisher,
    speed: float | None = 1.0,
    fmt: str | None = None,
    progress: bool = True,
    *,
    underlyings: Mapping[str, DhanUnderlying] = DEFAULT_UNDERLYINGS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    flush: bool = True,
) -> ReplayStats:
    """Replay one or more files (or directories of them) into ``publisher``.

    ``speed``: 1 = original pace, N = N× faster, None/0/inf = as fast as
    possible.  ``fmt``: ``dhan`` | ``nse`` | ``csv`` (default: by suffix).
    ``underlyings`` supplies lot sizes and ids the files lack (NSE has no lot
    size; Dhan records carry theirs).  Returns the stats, including every
    malformed line as ``file:line: reason``.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if speed is not None and (math.isnan(speed) or speed < 0):
        raise ValueError(f"speed must be >= 0 (0/None = as fast as possible), got {speed}")
    fast = speed is None or speed == 0 or math.isinf(speed)
    files = _expand(path)
    stats = ReplayStats()
    plan = [(p, fmt or detect_format(p)) for p in files]
    total = sum(_count_lines(p) for p, _ in plan) if progress else None
    started = clock()
    t0: datetime | None = None
    w0 = 0.0
    bar = tqdm(
        total=total,
        unit="line",
        desc="replay",
        disable=not progress,
        file=sys.stderr,
        mininterval=0.5,
        dynamic_ncols=True,
    )
    try:
        for p, f in plan:
            stats.files += 1
            bar.set_description(p.name)
            for item in _items(p, f, underlyings):  # type: ignore[arg-type]
                if isinstance(item, _Progress):
                    stats.records += item.records
                    bar.update(item.records)
                    continue
                if isinstance(item, _Malformed):
                    stats.errors.append(item.error)
                    log.warning("skipping malformed input %s", item.error)
                    publisher.dead_letter(
                        stage="feed", error_type="malformed_input", reason=str(item.error), value=item.raw
                    )
                    continue
                ts = item.ts
                stats.first_ts = ts if stats.first_ts is None else min(stats.first_ts, ts)
                stats.last_ts = ts if stats.last_ts is None else max(stats.last_ts, ts)
                if not fast:
                    assert speed is not None
                    if t0 is None:
                        t0, w0 = ts, clock()
                    else:
                        delay = w0 + (ts - t0).total_seconds() / speed - clock()
                        if delay > 0:
                            sleep(delay)
                _publish(item, publisher, stats)
                bar.set_postfix(snapshots=stats.snapshots, refresh=False)
    finally:
        bar.close()
        stats.elapsed_s = clock() - started
        if flush:
            publisher.flush()
    log.info("replay done: %s", stats.summary())
    return stats


def _publish(item: _Snapshot | _Dhan, publisher: Publisher, stats: ReplayStats) -> None:
    if isinstance(item, _Dhan):
        rec = item.record
        delivery = publish_dhan_body(
            publisher, rec.body, item.underlying, rec.expiry, rec.received_ts, source="replay-dhan"
        )
        stats.defects.update(delivery.defects)
        if delivery.result == "dead_lettered":
            stats.dead_lettered += 1
            return
        assert delivery.parsed is not None
        snapshot = delivery.parsed.snapshot
        ok = delivery.result == "published"
    else:
        snapshot = item.snapshot
        ok = publisher.publish(snapshot)
    if ok:
        stats.snapshots += 1
        stats.contracts += snapshot.n_contracts
    else:
        stats.rejected += 1


def backfill(
    paths: str | Path | Sequence[str | Path],
    publisher: Publisher,
    fmt: str | None = None,
    progress: bool = True,
    *,
    underlyings: Mapping[str, DhanUnderlying] = DEFAULT_UNDERLYINGS,
) -> ReplayStats:
    """``hftengine backfill``: replay files as fast as possible (no waiting for real time)."""
    return replay(paths, publisher, speed=None, fmt=fmt, progress=progress, underlyings=underlyings)
