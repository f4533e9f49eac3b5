"""Camera readers: latest-frame mailbox, reconnect with backoff, stall detection, isolation, fast stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from service.cameras import CameraManager, CameraReader, LatestFrameMailbox, SourceFactory, backoff_delay
from service.config import CameraConfig
from service.frames import CameraState, Frame
from service.sources import SourceError, make_source

REFUSE = "refuse"  # open() fails
FOREVER = "forever"  # frames until stopped
STALL = "stall"  # two frames, then read() blocks until the script is released
GARBAGE = "garbage"  # read() returns something that is not a BGR image
FAST = {"backoff_min": 0.05, "backoff_max": 0.2}


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll instead of sleeping a fixed time: returns as soon as the predicate holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


class Script:
    """What each successive connection of a fake camera does; the last entry repeats forever.

    An int n means: n frames, then the stream drops (read raises).
    """

    def __init__(self, *plan: int | str, period: float = 0.002) -> None:
        self.plan = plan
        self.period = period
        self.opens = 0
        self.release = threading.Event()

    def factory(self, config: CameraConfig) -> FakeSource:
        return FakeSource(self)


class FakeSource:
    native_fps = None

    def __init__(self, script: Script) -> None:
        self.script = script
        self.step: int | str = FOREVER
        self.count = 0

    def open(self) -> None:
        script = self.script
        self.step = script.plan[min(script.opens, len(script.plan) - 1)]
        script.opens += 1
        if self.step == REFUSE:
            raise SourceError("connection refused (fake)")

    def read(self) -> np.ndarray | None:
        time.sleep(self.script.period)
        self.count += 1
        if self.step == GARBAGE:
            return np.zeros((4, 4), np.float32)
        if self.step == STALL and self.count > 2:
            self.script.release.wait(timeout=5.0)
        if isinstance(self.step, int) and self.count > self.step:
            raise SourceError("stream dropped (fake)")
        return np.full((8, 8, 3), self.count % 256, np.uint8)

    def close(self) -> None:
        pass


def camera(camera_id: str = "cam", source: str = "fake", **options: object) -> CameraConfig:
    return CameraConfig(id=camera_id, source=source, **options)  # type: ignore[arg-type]


def frame(seq: int) -> Frame:
    return Frame("cam", seq, np.zeros((2, 2, 3), np.uint8), captured_at=0.0, captured_mono=0.0)


@pytest.fixture
def readers() -> Iterator[list[CameraReader]]:
    """Readers started by a test; always stopped afterwards so no thread outlives its test."""
    started: list[CameraReader] = []
    yield started
    for reader in started:
        reader.stop(timeout=2.0)


def test_mailbox_keeps_only_the_newest_and_counts_drops() -> None:
    box = LatestFrameMailbox()
    assert box.take() is None and box.peek() is None
    for seq in (1, 2, 3):
        box.put(frame(seq))
    assert box.dropped == 2
    assert box.peek().seq == 3  # type: ignore[union-attr]
    assert box.take().seq == 3  # type: ignore[union-attr]
    assert box.take() is None  # each frame is taken at most once
    assert box.peek().seq == 3  # type: ignore[union-attr]  # viewers still see it
    box.put(frame(4))
    assert box.dropped == 2  # frame 3 was taken, so overwriting it is no drop
    assert box.take().seq == 4  # type: ignore[union-attr]


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(0) == 0
    assert backoff_delay(10_000) == 30
    assert [backoff_delay(n, 0.05, 0.2) for n in range(1, 5)] == [0.05, 0.1, 0.2, 0.2]


def test_reader_refuses_bad_backoff() -> None:
    with pytest.raises(ValueError, match="backoff"):
        CameraReader(camera(), backoff_min=2.0, backoff_max=1.0)


def test_synthetic_camera_goes_live_with_increasing_seq(readers: list[CameraReader]) -> None:
    reader = CameraReader(camera("syn", "synthetic:64x48", fps=100))
    assert reader.status().state is CameraState.STOPPED  # not started yet
    reader.start()
    readers.append(reader)
    with pytest.raises(RuntimeError, match="already started"):
        reader.start()
    taken: list[Frame] = []

    def five_taken() -> bool:
        newest = reader.mailbox.take()
        if newest is not None:
            taken.append(newest)
        return len(taken) >= 5

    assert wait_until(five_taken)
    seqs = [f.seq for f in taken]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    first = taken[0]
    assert first.camera_id == "syn" and first.image.shape == (48, 64, 3) and first.image.dtype == np.uint8
    assert not first.image.flags.writeable  # shared between scheduler and video stream
    assert abs(first.captured_at - time.time()) < 5
    status = reader.status()
    assert status.state is CameraState.LIVE and status.frames >= 5 and status.fps > 0
    assert status.reconnects == 0 and status.last_error is None and status.last_frame_at is not None
    assert reader.stop(timeout=2.0)
    assert reader.status().state is CameraState.STOPPED


def test_camera_reconnects_by_itself(readers: list[CameraReader]) -> None:
    script = Script(3, REFUSE, REFUSE, FOREVER)
    reader = CameraReader(camera(), script.factory, **FAST)
    reader.start()
    readers.append(reader)
    assert wait_until(lambda: reader.status().state is CameraState.DOWN)
    down = reader.status()
    assert down.last_error in {"stream dropped (fake)", "connection refused (fake)"}
    assert wait_until(lambda: reader.status().state is CameraState.LIVE and reader.status().frames > 5)
    status = reader.status()
    assert script.opens == 4 and status.reconnects == 3
    assert status.last_error == "connection refused (fake)"  # kept after recovery, for the record
    assert status.last_error_at is not None and status.last_frame_at is not None
    assert status.last_error_at <= status.last_frame_at  # ...and dated, so a reader can tell it is history


def test_backoff_restarts_after_frames_flow(readers: list[CameraReader]) -> None:
    # Six drops in a row, each after one good frame: 6 x 50 ms if the backoff resets, 3 s if it kept doubling.
    script = Script(1, 1, 1, 1, 1, 1, FOREVER)
    reader = CameraReader(camera(), script.factory, backoff_min=0.05, backoff_max=60.0)
    reader.start()
    readers.append(reader)
    assert wait_until(lambda: reader.status().reconnects == 6, timeout=2.0)


def test_one_failing_camera_never_affects_another() -> None:
    scripts = {"good": Script(FOREVER), "dead": Script(REFUSE), "garbage": Script(GARBAGE)}

    def factory(config: CameraConfig) -> FakeSource:
        if config.id == "buggy":
            raise RuntimeError("factory bug")
        return scripts[config.id].factory(config)

    manager = CameraManager([camera(i) for i in ("good", "dead", "garbage", "buggy")], factory, **FAST)
    assert manager.ids == ["good", "dead", "garbage", "buggy"]
    manager.start_all()
    try:
        assert wait_until(lambda: all(s.reconnects >= 2 for s in manager.statuses() if s.camera_id != "good"))
        seen = manager.get("good").status().frames
        assert wait_until(lambda: manager.get("good").status().frames > seen + 10)
        by_id = {s.camera_id: s for s in manager.statuses()}
        assert by_id["good"].state is CameraState.LIVE and by_id["good"].last_error is None
        assert by_id["good"].reconnects == 0
        assert by_id["dead"].last_error == "connection refused (fake)"
        assert "expected an HxWx3 uint8 image" in (by_id["garbage"].last_error or "")
        assert by_id["buggy"].last_error == "RuntimeError: factory bug"
        assert wait_until(lambda: "good" in manager.take_newest())
        assert manager.peek("good") is not None and manager.peek("dead") is None
    finally:
        assert manager.stop_all(timeout=4.0)
    assert all(s.state is CameraState.STOPPED for s in manager.statuses())


def test_stalled_camera_is_reported_down_and_reconnected(readers: list[CameraReader]) -> None:
    script = Script(STALL, FOREVER)
    reader = CameraReader(camera(), script.factory, stall_timeout=0.1, **FAST)
    reader.start()
    readers.append(reader)
    assert wait_until(lambda: reader.status().state is CameraState.DOWN)
    assert "no frame for" in (reader.status().last_error or "")
    script.release.set()  # the blocked read returns late: the reader must treat it as a stall
    assert wait_until(lambda: reader.status().state is CameraState.LIVE and reader.status().reconnects == 1)
    assert "no frame for" in (reader.status().last_error or "")


def test_a_slow_paced_camera_is_not_taken_for_a_stalled_one(readers: list[CameraReader]) -> None:
    """A synthetic camera capped at fps 2 waits 0.5 s between frames, beyond this reader's 0.3 s stall
    timeout: found in review flapping live/down with every other frame."""
    reader = CameraReader(camera(source="synthetic:64x48", fps=2), stall_timeout=0.3, **FAST)
    reader.start()
    readers.append(reader)
    assert wait_until(lambda: reader.status().frames >= 1)
    time.sleep(1.6)
    status = reader.status()
    assert status.state is CameraState.LIVE and status.reconnects == 0 and status.last_error is None, status
    assert status.frames >= 3


def test_an_fps_cap_does_not_lengthen_a_live_camera_s_stall_timeout(readers: list[CameraReader]) -> None:
    """The cap only thins what a camera read at its own rate publishes: a stalled RTSP camera capped at
    0.2 fps must still be reported down after its stall timeout, not after 15 s (found in review)."""
    script = Script(STALL, FOREVER)
    reader = CameraReader(camera(fps=0.2), script.factory, stall_timeout=0.1, **FAST)
    reader.start()
    readers.append(reader)
    assert wait_until(lambda: reader.status().state is CameraState.DOWN)
    script.release.set()


class CountingMailbox(LatestFrameMailbox):
    """Records the sequence number of every frame the reader publishes."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[int] = []

    def put(self, frame: Frame) -> None:
        self.published.append(frame.seq)
        super().put(frame)


def run_capped_reader(factory: SourceFactory, readers: list[CameraReader]) -> tuple[CameraReader, list[int], float]:
    """Run a reader capped at 20 fps until it has decoded 100 frames, then stop it; returns the
    reader, the sequence numbers it published and the seconds it ran."""
    reader = CameraReader(camera(fps=20), factory)
    mailbox = CountingMailbox()
    reader.mailbox = mailbox
    start = time.monotonic()
    reader.start()
    readers.append(reader)
    assert wait_until(lambda: reader.status().frames >= 100)
    reader.stop()
    return reader, mailbox.published, time.monotonic() - start


def test_fps_cap_publishes_fewer_frames_than_decoded(readers: list[CameraReader]) -> None:
    reader, published, elapsed = run_capped_reader(Script(FOREVER, period=0.002).factory, readers)
    decoded = reader.status().frames
    assert 1 <= len(published) <= elapsed * 20 + 2
    assert decoded > len(published)


def test_fps_cap_skips_the_frames_it_would_not_publish(readers: list[CameraReader]) -> None:
    """A source that knows its frame rate and can skip: frames the cap would drop are skipped, not
    read and converted; every frame still counts as decoded, and the published rate keeps the cap."""

    class SkippingSource(FakeSource):
        native_fps = 500.0  # matches the script's 2 ms period

        def __init__(self, script: Script) -> None:
            super().__init__(script)
            self.reads = self.skips = 0

        def read(self) -> np.ndarray | None:
            self.reads += 1
            return super().read()

        def skip(self) -> bool:
            time.sleep(self.script.period)
            self.skips += 1
            return True

    sources: list[SkippingSource] = []

    def factory(config: CameraConfig) -> SkippingSource:
        sources.append(SkippingSource(Script(FOREVER, period=0.002)))
        return sources[-1]

    reader, published, elapsed = run_capped_reader(factory, readers)
    (source,) = sources
    assert reader.status().frames == source.reads + source.skips
    assert source.skips > source.reads >= len(published) >= 1
    assert len(published) <= elapsed * 20 + 2


def test_stop_all_is_quick_during_a_long_backoff() -> None:
    manager = CameraManager(
        [camera("dead"), camera("live", "synthetic:32x32")],
        lambda config: Script(REFUSE).factory(config) if config.id == "dead" else make_source(config),
        backoff_min=60.0,
        backoff_max=60.0,
    )
    manager.start_all()
    assert wait_until(lambda: manager.get("dead").status().state is CameraState.DOWN)
    start = time.monotonic()
    assert manager.stop_all(timeout=4.0)
    assert time.monotonic() - start < 2.0
    assert not any(manager.get(i).running for i in manager.ids)


def test_non_looping_file_ends_stopped(tmp_path: Path, readers: list[CameraReader]) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 200.0, (32, 32))
    for i in range(4):
        writer.write(np.full((32, 32, 3), 60 * i, np.uint8))
    writer.release()
    reader = CameraReader(camera(source=str(path), loop=False), **FAST)
    reader.start()
    readers.append(reader)
    assert wait_until(lambda: not reader.running)
    status = reader.status()
    assert status.state is CameraState.STOPPED and status.frames == 4
    assert status.reconnects == 0 and status.last_error is None


def test_manager_lookup_and_duplicates() -> None:
    manager = CameraManager([camera("a")], Script(FOREVER).factory)
    assert manager.get("a").camera_id == "a"
    with pytest.raises(KeyError, match="unknown camera 'b'"):
        manager.get("b")
    with pytest.raises(ValueError, match="duplicate camera id 'a'"):
        CameraManager([camera("a"), camera("a")])
