"""A ``Publisher`` that enriches and stores snapshots directly (no broker).

Used by ``hftengine backfill``: recorded data goes through the same
validation, kernels and idempotent sink as the streaming path, as fast as the
database takes it, without waiting for real time.  Invalid snapshots and feed
errors are stored in ``dead_letters`` with their reason.
"""

from __future__ import annotations

from typing import Any

from hftengine.enrich import analyze_snapshot, enriched_record, unpack_enriched
from hftengine.feeds.publisher import dead_letter_record, reject_invalid
from hftengine.snapshot import ChainSnapshot
from hftengine.storage.sink import PostgresChainStore


class DirectStorePublisher:
    def __init__(self, dsn: str, *, r: float, q: float, batch_size: int = 64) -> None:
        self.store = PostgresChainStore(dsn)
        self.r, self.q = r, q
        self.batch_size = batch_size
        self._batch: list[dict[str, Any]] = []
        self._letters: list[dict[str, Any]] = []
        self.sent = 0
        self.dead_lettered = 0
        self.chains_written = 0
        self.chains_duplicate = 0
        self.quote_rows = 0

    def publish(self, snapshot: ChainSnapshot) -> bool:
        if reject_invalid(self, snapshot):
            return False
        result = analyze_snapshot(snapshot, r=self.r, q=self.q)
        self._batch.append(unpack_enriched(enriched_record(snapshot, result, r=self.r, q=self.q)))
        self.sent += 1
        if len(self._batch) >= self.batch_size:
            self._write()
        return True

    def dead_letter(
        self, *, stage: str, error_type: str, reason: str, value: bytes | None = None,
        underlying: str | None = None, key: bytes | None = None,
    ) -> None:
        self._letters.append(dead_letter_record(stage=stage, error_type=error_type, reason=reason, value=value,
                                                underlying=underlying, key=key))
        self.dead_lettered += 1

    def _write(self) -> None:
        if self._batch:
            res = self.store.write(self._batch)
            self.chains_written += res.chains_written
            self.chains_duplicate += res.chains_duplicate
            self.quote_rows += res.quote_rows
            self._batch = []
        if self._letters:
            self.store.write_dead_letters(self._letters)
            self._letters = []

    def flush(self, timeout: float = 30.0) -> int:
        self._write()
        return 0

    def close(self) -> None:
        self.flush()
        self.store.close()
