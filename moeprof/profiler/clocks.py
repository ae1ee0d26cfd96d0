"""The SM clock, board power and clock-event reasons (NVML) while a point is timed.

A kernel bound by instruction issue runs slower at a lower SM clock; a DRAM-bound one hardly does. Near
its power limit a card lowers the SM clock (NVML's "SW power cap" clock-event reason), so a time taken
there is a statement about the card's power budget as much as about the kernel. Each timed point records
what NVML saw during its timed calls, sampled every few milliseconds on a thread, so the analysis can say
so (docs/performance.md, runs 89-91: the MXFP4 decode kernel runs an H200 into its 700 W limit at 64-256
tokens, where FP8 holds its full clock).

NVML is read through ctypes from the driver's libnvidia-ml.so.1: nothing to install. Where it cannot be
read (no driver library, no permission, a call that fails), the sampler records nothing and the point
carries no clock columns; timing goes on regardless.
"""

from __future__ import annotations

import ctypes
import statistics
import threading
import time
from dataclasses import dataclass

from moeprof.capture_folder import POINT_CLOCK_COLUMNS

NVML_CLOCK_SM = 1
# nvmlClocksEventReasons bits (nvml.h): the ones that lower clocks for power or heat
SW_POWER_CAP = 0x4
HW_SLOWDOWN = 0x8
SW_THERMAL_SLOWDOWN = 0x20
HW_THERMAL_SLOWDOWN = 0x40
HW_POWER_BRAKE_SLOWDOWN = 0x80
POWER_REASONS = SW_POWER_CAP | HW_POWER_BRAKE_SLOWDOWN
THERMAL_REASONS = SW_THERMAL_SLOWDOWN | HW_THERMAL_SLOWDOWN | HW_SLOWDOWN



@dataclass(frozen=True)
class Sample:
    t_s: float            # time.perf_counter() when read
    sm_clock_mhz: float
    power_w: float
    reasons: int          # nvmlClocksEventReasons bit mask


@dataclass(frozen=True)
class ClockSummary:
    sm_clock_median_mhz: float
    sm_clock_min_mhz: float
    power_median_w: float
    power_capped_fraction: float       # share of samples with a power reason active (SW cap, HW brake)
    thermal_slowdown_fraction: float   # share with a thermal or HW slowdown reason active
    samples: int

    def as_record(self) -> dict:
        """The points.csv columns (fields of the same names) and the sample count."""
        return {**{c: getattr(self, c) for c in POINT_CLOCK_COLUMNS}, "clock_samples": self.samples}


def summarize(samples: list[Sample]) -> ClockSummary | None:
    """Medians and shares over the samples; None without any."""
    if not samples:
        return None
    n = len(samples)
    return ClockSummary(
        sm_clock_median_mhz=float(statistics.median(s.sm_clock_mhz for s in samples)),
        sm_clock_min_mhz=float(min(s.sm_clock_mhz for s in samples)),
        power_median_w=float(statistics.median(s.power_w for s in samples)),
        power_capped_fraction=sum(1 for s in samples if s.reasons & POWER_REASONS) / n,
        thermal_slowdown_fraction=sum(1 for s in samples if s.reasons & THERMAL_REASONS) / n,
        samples=n)


class _Nvml:
    """The three NVML reads, for one device found by its UUID (CUDA and NVML may number devices
    differently) or, without one, by index."""

    def __init__(self, uuid: str | None, index: int):
        lib = ctypes.CDLL("libnvidia-ml.so.1")
        if lib.nvmlInit_v2() != 0:
            raise OSError("nvmlInit failed")
        self.lib, self.handle = lib, ctypes.c_void_p()
        rc = (lib.nvmlDeviceGetHandleByUUID(uuid.encode(), ctypes.byref(self.handle)) if uuid else 1)
        if rc != 0 and lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(self.handle)) != 0:
            raise OSError("no NVML handle for the device")
        # (the older name of the reasons call on drivers before r535)
        self.reasons_fn = (getattr(lib, "nvmlDeviceGetCurrentClocksEventReasons", None)
                           or lib.nvmlDeviceGetCurrentClocksThrottleReasons)

    def read(self) -> Sample | None:
        clk, mw, why = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_ulonglong()
        if (self.lib.nvmlDeviceGetClockInfo(self.handle, NVML_CLOCK_SM, ctypes.byref(clk)) != 0
                or self.lib.nvmlDeviceGetPowerUsage(self.handle, ctypes.byref(mw)) != 0
                or self.reasons_fn(self.handle, ctypes.byref(why)) != 0):
            return None
        return Sample(time.perf_counter(), float(clk.value), mw.value / 1000.0, int(why.value))


def _device_ids(device) -> tuple[str | None, int]:
    """(NVML UUID string or None, CUDA index) of a torch device."""
    import torch

    idx = torch.device(device).index
    idx = torch.cuda.current_device() if idx is None else idx
    uuid = getattr(torch.cuda.get_device_properties(idx), "uuid", None)
    text = str(uuid) if uuid is not None else None
    if text and not text.startswith("GPU-"):
        text = "GPU-" + text
    return text, idx


class ClockSampler:
    """Context manager: samples NVML every `period_s` on a thread while open; `.summary` afterwards
    (None when NVML could not be read or no sample was taken)."""

    def __init__(self, device="cuda", period_s: float = 0.002):
        self.period_s = period_s
        self.samples: list[Sample] = []
        self.summary: ClockSummary | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self._nvml: _Nvml | None = _Nvml(*_device_ids(device))
        except Exception:  # noqa: BLE001 - no NVML (or no CUDA device): the point gets no clock columns
            self._nvml = None

    def _run(self) -> None:
        while not self._stop.is_set():
            s = self._nvml.read() if self._nvml is not None else None
            if s is not None:
                self.samples.append(s)
            self._stop.wait(self.period_s)

    def __enter__(self) -> "ClockSampler":
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.summary = summarize(self.samples)
