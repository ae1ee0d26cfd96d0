"""The capture's point runner on the CPU: a fake layer and timer stand in for the GPU."""

import pytest

torch = pytest.importorskip("torch")


class _FakeLayer:
    experts_touched = 3

    def __init__(self, calls):
        self.calls = calls

    def __call__(self, nvtx=True):
        self.calls.append(nvtx)


@pytest.fixture
def runner(monkeypatch):
    from moeprof.profiler import _point_runner as pr

    calls, timings = [], []

    def fake_time_calls(layer, repeats, sustain_s=0.0):
        timings.append(repeats if not sustain_s else ("sustain", sustain_s))
        return [float(len(timings))] * repeats, "timing.time_fn cuda-graph, l2-flush"

    monkeypatch.setattr(pr, "build", lambda spec, batch: _FakeLayer(calls))
    monkeypatch.setattr(pr, "time_calls", fake_time_calls)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda *a, **k: None)
    monkeypatch.setattr(pr, "_FIRST_POINT", True)   # a fresh process
    return pr, calls, timings


def test_events_discard_the_process_first_timing(runner):
    pr, calls, timings = runner
    spec = dict(mode="events", format="fp8", repeats=4, warmup=2)
    first, second = pr.run_batch(spec, 1), pr.run_batch(spec, 64)
    assert timings == [4, 4, 4]                       # the first point timed twice, the next once
    assert first["layer_time_ns"] == [2.0] * 4        # its second timing is the one kept
    assert second["layer_time_ns"] == [3.0] * 4
    assert first["timing"].endswith("after a discarded first timing")
    assert "discarded" not in second["timing"]
    assert calls == [False] * 4                       # the warm-up calls of the two points


def test_nsys_first_point_runs_its_calls_once_untimed(runner):
    pr, calls, _ = runner
    spec = dict(mode="nsys", format="mxfp4", repeats=3, warmup=2)
    pr.run_batch(spec, 1)
    assert calls == [False] * 2 + [False] * 3 + [True] * 3   # warm-up, untimed pass, the NVTX-marked calls
    calls.clear()
    pr.run_batch(spec, 64)
    assert calls == [False] * 2 + [True] * 3


def test_ncu_takes_no_extra_pass(runner):
    pr, calls, _ = runner
    pr.run_batch(dict(mode="ncu", format="bf16", repeats=1, warmup=1), 1)
    assert calls == [False, True]


def test_events_sustain_first_and_record_the_clocks_of_the_timed_calls(runner, monkeypatch):
    """--sustain-s: the back-to-back calls run before the timed ones and outside the NVML sampler,
    which covers the timed calls alone; its summary lands in the point's record."""
    from moeprof.profiler import clocks

    pr, _, timings = runner
    opened = []

    class FakeSampler:
        def __enter__(self):
            opened.append(list(timings))      # what had run when sampling began
            return self

        def __exit__(self, *exc):
            self.summary = clocks.summarize([clocks.Sample(0.0, 1710.0, 692.5, clocks.SW_POWER_CAP)])

    monkeypatch.setattr(clocks, "ClockSampler", FakeSampler)
    monkeypatch.setattr(pr, "_FIRST_POINT", False)
    rec = pr.run_batch(dict(mode="events", format="mxfp4", repeats=5, warmup=1, sustain_s=1.5), 64)
    assert timings == [("sustain", 1.5), 5] and opened == [[("sustain", 1.5)]]
    assert rec["layer_time_ns"] == [2.0] * 5
    assert rec["timing"].endswith("after 1.5 s of back-to-back calls")
    assert (rec["sm_clock_median_mhz"], rec["power_median_w"], rec["power_capped_fraction"]) == (1710.0, 692.5, 1.0)
