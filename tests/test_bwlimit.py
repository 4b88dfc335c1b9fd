"""The bandwidth cap by time of day (PHOTO_SYNC_EDGE_BANDWIDTH_LIMIT, edge/bandwidth.py):
the parser, the rate limiter following the timetable under an injected clock (no test
sleeps through a window), and real runs through the test bed whose current window is a
low rate: the limiter asks for the sleeps that rate needs, switches when the window
changes mid-run, and the agent logs the window it applied."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest

from conftest import assert_edge_matches_ho
from photo_sync.edge import bandwidth
from photo_sync.edge.bandwidth import Timetable
from photo_sync.edge.client import HOClient
from photo_sync.edge.engine import SyncRun
from photo_sync.edge.http.body import RateLimiter
from photo_sync.edge.settings import EdgeSettings
from photo_sync.errors import ConfigError
from support.role_probe import run_probes, task_results

K, M = 1024, 1024 * 1024


# The parser -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, windows", [
    ("", [(0, 0)]),
    ("0", [(0, 0)]),
    ("off", [(0, 0)]),
    ("2000000", [(0, 2_000_000)]),  # today's form: a bare number is bytes per second
    ("512k", [(0, 512 * K)]),
    ("1.5M", [(0, int(1.5 * M))]),
    ("08:00,512k 20:00,off", [(480, 512 * K), (1200, 0)]),
    ("  00:00,1M 7:30,100K   23:59,2G ", [(0, M), (450, 100 * K), (1439, 2 * 1024 * M)]),
    ("12:00,300B", [(720, 300)]),
])
def test_a_plain_rate_or_a_timetable_parses(text, windows):
    assert [(w.start, w.rate) for w in bandwidth.parse(text).windows] == windows


@pytest.mark.parametrize("text, words", [
    ("20:00,off 08:00,512k", "increasing order"),
    ("08:00,512k 08:00,1M", "increasing order"),
    ("08:00,512x", "is not a rate"),
    ("08:00,512", "has no unit"),  # rclone would read KiB/s, the plain form bytes/s
    ("25:00,1M", "not a time of day"),
    ("08:60,1M", "not a time of day"),
    ("Mon-08:00,1M", "names a weekday"),
    ("08:00,512k:1M", "upload:download"),
    ("08:00", "HH:MM,RATE"),
    ("08:00,", "HH:MM,RATE"),
    ("512k 1M", "separated by spaces"),
    ("1.5", "whole number"),
    ("-5", "is not a rate"),
])
def test_a_bad_value_names_the_setting_and_what_is_wrong(text, words):
    with pytest.raises(ConfigError) as caught:
        bandwidth.parse(text)
    message = str(caught.value)
    assert message.startswith(f"PHOTO_SYNC_EDGE_BANDWIDTH_LIMIT={text.strip()!r}"), message
    assert words in message, message


def test_settings_refuse_a_bad_timetable_and_keep_a_good_one():
    env = {"PHOTO_SYNC_EDGE_DATABASE_URL": "postgresql:///x"}
    with pytest.raises(ConfigError, match="increasing order"):
        EdgeSettings.load(environ={**env, "PHOTO_SYNC_EDGE_BANDWIDTH_LIMIT": "9:00,1M 8:00,2M"},
                          need_ho=False)
    settings = EdgeSettings.load(
        environ={**env, "PHOTO_SYNC_EDGE_BANDWIDTH_LIMIT": "08:00,512k 20:00,off"},
        need_ho=False)
    assert settings.bandwidth_limit.rate_at(dt.time(12, 0)) == 512 * K
    assert EdgeSettings.load(environ=env, need_ho=False).bandwidth_limit.rate_at(
        dt.time(12, 0)) == 0


@pytest.mark.parametrize("at, rate", [
    (dt.time(0, 0), 0),  # before the first entry: the last one runs on past midnight
    (dt.time(7, 59), 0),
    (dt.time(8, 0), 512 * K),
    (dt.time(12, 30), 512 * K),
    (dt.time(19, 59), 512 * K),
    (dt.time(20, 0), 0),
    (dt.time(23, 59), 0),
])
def test_each_rate_holds_from_its_time_to_the_next(at, rate):
    assert bandwidth.parse("08:00,512k 20:00,off").rate_at(at) == rate


def test_a_timetable_prints_back_as_it_was_meant():
    table = bandwidth.parse("8:00,524288B 20:00,OFF")
    assert str(table) == "08:00,512k 20:00,off"
    assert str(bandwidth.parse("2000000")) == "2000000 B/s"


# The limiter under an injected clock ------------------------------------------------------

class FakeClock:
    """Monotonic seconds that pass only when the limiter sleeps; the local time of day
    moves with them from `start`. Records every sleep asked for."""

    def __init__(self, start: dt.datetime):
        self.start = start
        self.now = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def local(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=self.monotonic())

    def limiter(self, table: Timetable | int) -> RateLimiter:
        return RateLimiter(table, clock=self.monotonic, sleep=self.sleep, local_now=self.local)


def test_a_constant_rate_asks_for_the_sleeps_it_needs_and_off_for_none():
    clock = FakeClock(dt.datetime(2026, 12, 1, 12, 0))
    limiter = clock.limiter(100 * K)
    for _ in range(40):
        limiter.acquire(25 * K)  # 1000 KiB at 100 KiB/s: 10 s, less the burst allowance
    assert sum(clock.sleeps) == pytest.approx(10 - limiter.burst)
    unlimited = FakeClock(dt.datetime(2026, 12, 1, 12, 0))
    for _ in range(40):
        unlimited.limiter(0).acquire(25 * K)
    assert unlimited.sleeps == []


def test_the_window_switch_reaches_a_download_in_progress():
    """A low window until 09:00, off after: a wait under the low rate ends when the
    window changes, and bytes flow without waits from then on."""
    clock = FakeClock(dt.datetime(2026, 12, 1, 8, 59, 50))
    limiter = clock.limiter(bandwidth.parse("08:00,10k 09:00,off"))
    assert limiter.rate == 10 * K
    limiter.acquire(1000 * K)  # 100 s at 10 KiB/s; the window ends after 10 s
    assert 10 <= clock.now <= 10 + RateLimiter.CHECK_EVERY
    assert max(clock.sleeps) <= RateLimiter.CHECK_EVERY  # never one long sleep
    assert limiter.rate == 0
    waited = len(clock.sleeps)
    for _ in range(100):
        limiter.acquire(256 * K)
    assert len(clock.sleeps) == waited


def test_the_timetable_is_looked_at_once_a_second_at_most():
    clock = FakeClock(dt.datetime(2026, 12, 1, 12, 0))
    looked = []

    def local():
        looked.append(clock.now)
        return clock.local()

    limiter = RateLimiter(bandwidth.parse("08:00,1M 20:00,off"), clock=clock.monotonic,
                          sleep=clock.sleep, local_now=local)
    for _ in range(50):
        limiter.acquire(10 * K)  # 500 KiB at 1 MiB/s: about half a second in all
    assert len(looked) == 1
    clock.now += 1.0
    limiter.acquire(10 * K)
    assert len(looked) == 2


def test_a_faster_window_drops_the_slow_ones_debt():
    clock = FakeClock(dt.datetime(2026, 12, 1, 8, 59, 59))
    limiter = clock.limiter(bandwidth.parse("08:00,1k 09:00,1M"))
    limiter.acquire(1 * K)  # inside the burst allowance: no wait
    limiter.acquire(100 * K)  # 100 s at 1 KiB/s, cut at 09:00
    assert clock.now <= 1 + RateLimiter.CHECK_EVERY
    before = clock.now
    limiter.acquire(M)  # one second's worth at 1 MiB/s, less the burst
    assert clock.now - before == pytest.approx(1 - limiter.burst)


# Real runs through the test bed -------------------------------------------------------

def _around_now(low: str) -> str:
    """A timetable whose window at this moment is `low` (from 30 minutes ago) and `off`
    from 30 minutes on: the run falls inside the low window whatever the time of day."""
    now = dt.datetime.now().astimezone()
    start = (now - dt.timedelta(minutes=30)).strftime("%H:%M")
    end = (now + dt.timedelta(minutes=30)).strftime("%H:%M")
    entries = sorted([(start, low), (end, "off")])
    return " ".join(f"{at},{rate}" for at, rate in entries)


@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    stack = ho_stack("bwlimit")
    stack.import_dir(photo_factory(4, seed=71, min_kb=60, max_kb=120, mean_kb=90))
    yield stack
    stack.server.stop()


def test_a_run_in_a_low_window_sleeps_as_that_rate_needs(ho, make_edge):
    edge = make_edge(ho, concurrency=1, bandwidth_limit=_around_now("64k"))
    settings = EdgeSettings.load(environ=edge.env)
    client = HOClient.from_settings(settings)
    assert client.limiter.timetable == settings.bandwidth_limit  # the setting reaches it
    clock = FakeClock(dt.datetime.now().astimezone())
    client.limiter = clock.limiter(client.limiter.timetable)
    summary = SyncRun(settings, "full", client=client).execute()
    assert summary.status == "ok" and summary.downloaded == 4, summary
    assert_edge_matches_ho(edge, ho)
    assert client.limiter.rate == 64 * K
    # The bytes the run read off the wire, at 64 KiB/s: what it asked to sleep, less the
    # burst allowance (the answers' headers are not counted, only bodies).
    assert sum(clock.sleeps) == pytest.approx(summary.bytes / (64 * K) - client.limiter.burst,
                                              abs=0.01)


def test_a_run_that_crosses_into_an_open_window_stops_waiting(ho, make_edge):
    settings = EdgeSettings.load(environ=make_edge(ho, concurrency=1).env)
    client = HOClient.from_settings(settings)
    # 4 photos of ~90 KiB at 8 KiB/s would take ~45 s; the window opens after 5 s.
    clock = FakeClock(dt.datetime(2026, 12, 1, 8, 59, 55).astimezone())
    client.limiter = clock.limiter(bandwidth.parse("08:00,8k 09:00,off"))
    summary = SyncRun(settings, "full", client=client).execute()
    assert summary.status == "ok" and summary.downloaded == 4, summary
    assert summary.bytes / (8 * K) > 30
    assert 5 <= sum(clock.sleeps) <= 5 + RateLimiter.CHECK_EVERY
    assert client.limiter.rate == 0


def test_the_agent_logs_the_window_it_applies(ho, make_edge):
    table = _around_now("1M")
    edge = make_edge(ho, bandwidth_limit=table)
    result = edge.cli("--verbose", "pull", "--mode", "full", "--json")
    assert result.returncode == 0, (result.stdout, result.stderr)
    start = bandwidth.parse(table).window_at(dt.datetime.now().astimezone())
    assert start.rate == M
    assert f"bandwidth cap 1M from {str(start).partition(',')[0]} (timetable {table})" \
        in result.stderr, result.stderr
    assert_edge_matches_ho(edge, ho)



@pytest.mark.parametrize("value, at_noon", [
    ("08:00,512k 20:00,off", 512 * K),
    (2000000, 2_000_000),  # today's inventories: an int, bytes per second
], ids=["timetable", "plain-rate"])
def test_the_role_writes_a_timetable_the_agent_reads_back(tmp_path, value, at_noon):
    """The store's inventory value, through the role's edge.env.j2, read as the agent reads
    its --config file (the same file systemd's EnvironmentFile= reads)."""
    env_file = tmp_path / "edge.env"
    tasks = [{"name": "Render the agent's settings",
              "ansible.builtin.template": {"src": "edge.env.j2", "dest": str(env_file),
                                           "mode": "0600"}}]
    host_vars = {"edge_photo_sync_bandwidth_limit": value,
                 "edge_photo_sync_ho_url": "https://ho.example",
                 "edge_photo_sync_store_id": "6f1c1d4e-43a4-4f61-9d0b-3c1f6f0f2a11",
                 "edge_photo_sync_store_secret": "not-a-real-secret"}
    results = task_results(run_probes(tmp_path, {("edge_photo_sync", "probe_env.yml"): tasks},
                                      args=("-e", json.dumps(host_vars))))
    assert not results["Render the agent's settings"].get("failed"), results
    settings = EdgeSettings.load(config_file=str(env_file), environ={})
    assert settings.bandwidth_limit.rate_at(dt.time(12, 0)) == at_noon
    assert settings.bandwidth_limit.rate_at(dt.time(21, 0)) == (0 if isinstance(value, str)
                                                                else at_noon)
