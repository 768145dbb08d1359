"""measure_latency's bounds and statistics; timed with a fake clock, so no test races the real one."""

import numpy as np
import pytest

from edgeclf.errors import UsageError
from edgeclf.runtime.latency import (LatencyStats, measure_cold_start, measure_latency, peak_rss_bytes,
                                     system_info)


def test_runs_bound_and_warmup_counted():
    calls = []
    stats = measure_latency(lambda: calls.append(1), warmup=4, runs=10)
    assert len(calls) == 14, "4 warm-up calls + 10 timed"
    assert stats.runs == 10 and stats.warmup == 4


@pytest.fixture
def fake_clock(monkeypatch):
    """A clock that moves only when a test says so: timings are exact, whatever the machine's load."""
    import edgeclf.runtime.latency as latency

    now = [0]

    def advance(ms):
        now[0] += int(ms * 1e6)

    monkeypatch.setattr(latency.time, "perf_counter_ns", lambda: now[0])
    return advance


def test_seconds_bound_stops_early(fake_clock):
    stats = measure_latency(lambda: fake_clock(10), warmup=0, seconds=0.05)
    assert stats.runs == 5
    assert stats.p50_ms == pytest.approx(10.0)


def test_both_bounds_first_wins():
    stats = measure_latency(lambda: None, warmup=0, runs=5, seconds=10)
    assert stats.runs == 5


def test_statistics_from_samples():
    s = LatencyStats.from_samples([1.0] * 98 + [50.0, 100.0])
    assert s.p50_ms == 1.0, "the median ignores the two outliers"
    assert s.p90_ms == 1.0
    assert s.p99_ms > 40
    assert s.max_ms == 100.0 and s.min_ms == 1.0
    assert s.mean_ms == pytest.approx(2.48)
    assert s.std_ms == pytest.approx(np.std([1.0] * 98 + [50.0, 100.0], ddof=1))


@pytest.mark.parametrize("kw", [dict(runs=0), dict(seconds=0), dict(warmup=-1), dict(seconds=-2.0)])
def test_bad_bounds(kw):
    with pytest.raises(UsageError):
        measure_latency(lambda: None, **kw)


def test_cold_start_and_memory(fake_clock):
    cold, obj = measure_cold_start(lambda: (fake_clock(20), "model")[1], lambda m: fake_clock(10))
    assert obj == "model"
    assert cold.load_ms == pytest.approx(20.0) and cold.first_inference_ms == pytest.approx(10.0)
    assert cold.total_ms == pytest.approx(cold.load_ms + cold.first_inference_ms)
    peak = peak_rss_bytes()
    assert peak is None or peak > 10 * 1024 * 1024, "a Python process with numpy uses more than 10 MB"


def test_system_info_names_the_engines():
    info = system_info()
    assert info.cpu_model and info.usable_cpus >= 1
    assert info.onnxruntime and info.ai_edge_litert
    assert "onnxruntime" in info.summary()
