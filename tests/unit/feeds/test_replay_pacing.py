"""Replay pace (original, N x, as fast as possible) and the progress bar."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hftengine.feeds.fake_dhan import fake_chain_body
from hftengine.feeds.formats import DhanRecord
from hftengine.feeds.replay import replay
from hftengine.snapshot import ChainSnapshot
from tests.factories import RecordingPublisher

DATA = Path(__file__).resolve().parents[2] / "data" / "replay"


class CountingPublisher(RecordingPublisher):
    """The recording publisher, also noting when (on ``clock``, else monotonic time) each snapshot came."""

    def __init__(self, clock: SimClock | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.at: list[float] = []

    def publish(self, snapshot: ChainSnapshot) -> bool:
        self.at.append(self.clock.now if self.clock else time.monotonic())
        return super().publish(snapshot)


class SimClock:
    def __init__(self) -> None:
        self.now = 50.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def write_recording(path: Path, offsets_s: list[float]) -> None:
    from datetime import UTC, date, datetime, timedelta

    t0 = datetime(2030, 1, 1, 4, 0, tzinfo=UTC)
    expiry = date(2030, 1, 10)
    with path.open("w") as f:
        for i, off in enumerate(offsets_s):
            body = fake_chain_body(13, expiry, i, today=date(2030, 1, 1), n_strikes=5)
            rec = DhanRecord(t0 + timedelta(seconds=off), 13, "IDX_I", expiry, body, "NIFTY", 65, 200)
            f.write(rec.to_json() + "\n")


@pytest.mark.parametrize(
    ("speed", "expected"),
    [
        (1.0, [0.0, 1.0, 3.0, 3.5]),
        (10.0, [0.0, 0.1, 0.3, 0.35]),
        (None, [0.0] * 4),
        (0.0, [0.0] * 4),
        (float("inf"), [0.0] * 4),
    ],
)
def test_pace_follows_data_timestamps(tmp_path: Path, speed: float | None, expected: list[float]) -> None:
    path = tmp_path / "r.jsonl"
    write_recording(path, [0.0, 1.0, 3.0, 3.5])
    clock = SimClock()
    pub = CountingPublisher(clock)
    stats = replay(path, pub, speed=speed, progress=False, sleep=clock.sleep, clock=clock)
    assert [round(t - 50.0, 9) for t in pub.at] == pytest.approx(expected)
    assert stats.snapshots == 4 and stats.elapsed_s == pytest.approx(expected[-1])
    if speed in (None, 0.0, float("inf")):
        assert clock.sleeps == []


def test_pace_csv_groups_and_out_of_order_timestamps_do_not_sleep(tmp_path: Path) -> None:
    clock = SimClock()
    pub = CountingPublisher(clock)
    replay(DATA / "chain.csv", pub, speed=2.0, progress=False, sleep=clock.sleep, clock=clock)
    assert [t - 50.0 for t in pub.at] == pytest.approx([0.0, 0.0, 1.5])  # 3 s of data at 2x
    path = tmp_path / "back.jsonl"
    write_recording(path, [5.0, 1.0, 6.0])
    clock2 = SimClock()
    replay(path, CountingPublisher(clock2), speed=1.0, progress=False, sleep=clock2.sleep, clock=clock2)
    assert clock2.sleeps == pytest.approx([1.0])  # the earlier line is sent at once, the later one on time


def test_real_time_pace_with_speed_multiplier(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_recording(path, [0.0, 1.0, 2.0, 3.0])
    pub = CountingPublisher()
    started = time.monotonic()
    stats = replay(path, pub, speed=20.0, progress=False)
    took = time.monotonic() - started
    assert 0.14 <= took < 1.5 and stats.snapshots == 4
    gaps = [b - a for a, b in zip(pub.at, pub.at[1:], strict=False)]
    assert all(g >= 0.045 for g in gaps)


def test_invalid_speed() -> None:
    with pytest.raises(ValueError, match="speed"):
        replay(DATA / "chain.csv", CountingPublisher(), speed=-1.0, progress=False)


def test_progress_bar_shows_rate_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    replay(DATA / "chain.csv", CountingPublisher(), speed=None, progress=True)
    err = capsys.readouterr().err
    assert "chain.csv" in err and "100%" in err and "10/10" in err
    assert "line/s" in err and "<00:00" in err and "snapshots=3" in err  # rate, ETA, postfix
    replay(DATA / "chain.csv", CountingPublisher(), speed=None, progress=False)
    assert "line/s" not in capsys.readouterr().err


def test_stats_throughput_properties(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_recording(path, [0.0, 1.0])
    clock = SimClock()
    stats = replay(path, CountingPublisher(clock), speed=1.0, progress=False, sleep=clock.sleep, clock=clock)
    assert stats.elapsed_s == 1.0 and stats.snapshots_per_s == 2.0 and stats.contracts_per_s == 20.0
    assert "2 snapshots / 20 contracts" in stats.summary()
    assert json.loads(path.read_text().splitlines()[0])["symbol"] == "NIFTY"
