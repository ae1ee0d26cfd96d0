"""GPU specifications: memory, bandwidth, dense tensor-core peaks, SM count, L2, clocks.

All FLOP/s are *dense* (no 2:4 sparsity): NVIDIA datasheets quote sparse peaks, which are 2x.
Capacities are what CUDA reports as total memory (torch `total_memory`), which is what a runtime
can allocate from, not the marketing GB.

Clocks: NVIDIA quotes tensor peaks at a boost clock (`boost_clock_hz`, H100 SXM: 1830 MHz) that is
lower than the highest SM clock the part can run at (`max_sm_clock_hz`, 1980 MHz). The per-SM
per-cycle tensor rate is derived from the quoted peak and the quoted clock, so analysis code can
rebuild a peak from a measured clock: peak = rate_per_cycle_per_sm * sm_count * measured_clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from moeprof.errors import MoeprofError

MMA_DTYPES = ("bf16", "fp8", "fp4")

_MiB = 1024 * 1024


@dataclass(frozen=True)
class GpuSpec:
    name: str                         # canonical key, e.g. "h200-sxm"
    display_name: str                 # e.g. "NVIDIA H200 SXM 141GB"
    arch: str                         # "hopper" | "blackwell"
    compute_capability: tuple[int, int]
    hbm_bytes: int                    # as CUDA reports it (allocatable total)
    hbm_bandwidth_bytes_per_s: float  # datasheet peak
    bf16_flops_per_s: float           # dense tensor-core peak, FP32 accumulate
    fp8_flops_per_s: float            # dense tensor-core peak (e4m3/e5m2)
    fp4_flops_per_s: float | None     # dense native FP4 MMA peak; None where there is no FP4 MMA
    sm_count: int
    l2_bytes: int
    boost_clock_hz: float             # SM clock at which the tensor peaks above are quoted
    max_sm_clock_hz: float            # highest SM clock the part reports (nvidia-smi max clocks)
    memory_clock_hz: float | None     # as nvidia-smi / CUDA report it, where known
    aliases: tuple[str, ...] = ()
    # NVLink bandwidth one GPU can send (= receive) at once, i.e. half the datasheet's bidirectional
    # figure; the scale of NCCL's "bus bandwidth". None where the part has no NVLink or it is unknown.
    link_bytes_per_s: float | None = None
    cuda_names: tuple[str, ...] = ()  # torch.cuda.get_device_name() strings for this part

    @property
    def native_fp4_mma(self) -> bool:
        return self.fp4_flops_per_s is not None

    def tensor_flops_per_s(self, dtype: str) -> float:
        """Dense tensor-core peak for an MMA input type ('bf16', 'fp8', 'fp4')."""
        if dtype == "bf16":
            return self.bf16_flops_per_s
        if dtype == "fp8":
            return self.fp8_flops_per_s
        if dtype == "fp4":
            if self.fp4_flops_per_s is None:
                raise MoeprofError(f"{self.display_name} has no native FP4 MMA")
            return self.fp4_flops_per_s
        raise MoeprofError(f"unknown MMA dtype {dtype!r}; valid: {', '.join(MMA_DTYPES)}")

    def tensor_flops_per_cycle_per_sm(self, dtype: str) -> float:
        """Dense FLOP per SM clock cycle = quoted peak / (SMs x quoted clock).

        H100/H200: BF16 4096 (= 4 tensor cores x 512 FMA x 2), FP8 8192.
        """
        return self.tensor_flops_per_s(dtype) / (self.sm_count * self.boost_clock_hz)

    def tensor_flops_per_s_at(self, dtype: str, sm_clock_hz: float) -> float:
        """Peak rebuilt from a (measured) SM clock."""
        return self.tensor_flops_per_cycle_per_sm(dtype) * self.sm_count * sm_clock_hz

    def ridge_flop_per_byte(self, dtype: str) -> float:
        """Arithmetic intensity where the MMA peak and HBM bandwidth meet."""
        return self.tensor_flops_per_s(dtype) / self.hbm_bandwidth_bytes_per_s


# Sources
# [H100-DS]  NVIDIA H100 Tensor Core GPU datasheet (SXM / PCIe columns; sparse peaks, halved here):
#            SXM BF16 1,979 / FP8 3,958 TFLOPS sparse, 3.35 TB/s, 80 GB;
#            PCIe BF16 1,513 / FP8 3,026 TFLOPS sparse, 2.0 TB/s, 80 GB.
# [H100-WP]  NVIDIA H100 Tensor Core GPU Architecture whitepaper: 132 SMs (SXM5) / 114 (PCIe),
#            50 MB L2, 4 tensor cores per SM; dense BF16 989.4 TFLOPS = 132 x 4096 x 1.83 GHz.
# [H100-PB]  NVIDIA H100 PCIe product brief PB-11133-001: max boost 1755 MHz, > 2,000 GB/s.
# [H200-DS]  NVIDIA H200 datasheet: 141 GB HBM3e, 4.8 TB/s, same FLOPS as H100 SXM.
# [H20-DS]   NVIDIA H20 (HGX H20) product sheet: 96 GB HBM3, 4.0 TB/s, 148 TFLOPS BF16 dense,
#            296 TFLOPS FP8 dense, 78 SMs (reported by CUDA), 60 MB L2.
# [B200-DS]  NVIDIA HGX B200 datasheet (per GPU, 1,000 W): FP4 9 / FP8 4.5 / BF16 2.25 PFLOPS dense
#            (18 / 9 / 4.5 sparse), 8 TB/s HBM3e.
# [NVL-DS]   H100 SXM / H200 SXM datasheets: NVLink (4th generation) 900 GB/s per GPU, bidirectional
#            (18 links x 50 GB/s), i.e. 450 GB/s each way. HGX B200 datasheet: NVLink 5, 1.8 TB/s per
#            GPU bidirectional. Measured on a 2x H200 (NV18) machine with NCCL through torchrun
#            (issue 13): all-reduce bus bandwidth 281 GB/s at 94 MB, all-to-all 290 GB/s, i.e. ~62 %
#            of the datasheet figure for 2 GPUs; pass --link-gbps to use a measured figure.
# [CUDA]     torch.cuda.get_device_properties() as printed on real machines (public logs, and ours
#            for the H200): total_memory, multi_processor_count, L2_cache_size (MiB).

_GPUS: tuple[GpuSpec, ...] = (
    GpuSpec(
        name="h100-sxm",
        display_name="NVIDIA H100 SXM 80GB",
        arch="hopper",
        compute_capability=(9, 0),
        hbm_bytes=81090 * _MiB,                 # [CUDA] 'NVIDIA H100 80GB HBM3' total_memory=81090MB
        hbm_bandwidth_bytes_per_s=3.35e12,      # [H100-DS]
        bf16_flops_per_s=989.4e12,              # [H100-DS] 1,979 sparse / 2; [H100-WP]
        fp8_flops_per_s=1978.9e12,              # [H100-DS] 3,958 sparse / 2
        fp4_flops_per_s=None,                   # Hopper has no FP4 MMA
        sm_count=132,                           # [H100-WP], [CUDA]
        l2_bytes=50 * _MiB,                     # [H100-WP], [CUDA] L2_cache_size=50MB
        boost_clock_hz=1.83e9,                  # [H100-WP] clock of the tensor peaks
        max_sm_clock_hz=1.98e9,                 # nvidia-smi max SM clock
        memory_clock_hz=2.619e9,                # nvidia-smi max memory clock (HBM3)
        link_bytes_per_s=450e9,                   # [NVL-DS] 900 GB/s bidirectional / 2
        aliases=("h100", "h100-sxm5", "h100sxm", "h100-80gb"),
        cuda_names=("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5 80GB", "NVIDIA H100"),
    ),
    GpuSpec(
        name="h100-pcie",
        display_name="NVIDIA H100 PCIe 80GB",
        arch="hopper",
        compute_capability=(9, 0),
        hbm_bytes=81008 * _MiB,                 # [CUDA] 'NVIDIA H100 PCIe' total_memory=81008MB
        hbm_bandwidth_bytes_per_s=2.0e12,       # [H100-DS], [H100-PB]
        bf16_flops_per_s=756.5e12,              # [H100-DS] 1,513 sparse / 2
        fp8_flops_per_s=1513e12,                # [H100-DS] 3,026 sparse / 2
        fp4_flops_per_s=None,
        sm_count=114,                           # [H100-WP], [CUDA]
        l2_bytes=50 * _MiB,                     # [H100-WP]
        boost_clock_hz=1.62e9,                  # derived: 756.5e12 / (114 x 4096)
        max_sm_clock_hz=1.755e9,                # [H100-PB]
        memory_clock_hz=None,
        aliases=("h100pcie",),
        cuda_names=("NVIDIA H100 PCIe",),
    ),
    GpuSpec(
        name="h200-sxm",
        display_name="NVIDIA H200 SXM 141GB",
        arch="hopper",
        compute_capability=(9, 0),
        hbm_bytes=143156 * _MiB,                # [CUDA] 'NVIDIA H200' total_memory=143156MB
        hbm_bandwidth_bytes_per_s=4.8e12,       # [H200-DS]
        bf16_flops_per_s=989.4e12,              # [H200-DS] same GH100 tensor cores as H100 SXM
        fp8_flops_per_s=1978.9e12,              # [H200-DS]
        fp4_flops_per_s=None,
        sm_count=132,                           # [CUDA] measured on our machine
        l2_bytes=60 * _MiB,                     # [CUDA] measured on our machine: L2_cache_size=60MB
        boost_clock_hz=1.83e9,                  # as H100 SXM (same die, same quoted peaks)
        max_sm_clock_hz=1.98e9,                 # measured on our machine
        memory_clock_hz=3.201e9,                # measured on our machine
        link_bytes_per_s=450e9,                   # [NVL-DS] 900 GB/s bidirectional / 2
        aliases=("h200", "h200sxm", "h200-141gb"),
        cuda_names=("NVIDIA H200",),
    ),
    GpuSpec(
        name="h20",
        display_name="NVIDIA H20 96GB",
        arch="hopper",
        compute_capability=(9, 0),
        hbm_bytes=97285 * _MiB,                 # [CUDA] 'NVIDIA H20' total_memory=97285MB
        hbm_bandwidth_bytes_per_s=4.0e12,       # [H20-DS]
        bf16_flops_per_s=148e12,                # [H20-DS]
        fp8_flops_per_s=296e12,                 # [H20-DS]
        fp4_flops_per_s=None,
        sm_count=78,                            # [CUDA] multi_processor_count=78
        l2_bytes=60 * _MiB,                     # [H20-DS]
        # Unverified: assumed the H100 SXM clocks. The H20's tensor rate is capped, so its derived
        # per-SM per-cycle rate (~1037 BF16 FLOP/clk/SM) is not a Hopper power of two.
        boost_clock_hz=1.83e9,
        max_sm_clock_hz=1.98e9,
        memory_clock_hz=None,
        aliases=("h20-96gb",),
        cuda_names=("NVIDIA H20",),
    ),
    GpuSpec(
        name="b200",
        display_name="NVIDIA B200 180GB",
        arch="blackwell",
        compute_capability=(10, 0),
        hbm_bytes=182631 * _MiB,                # [CUDA] 'NVIDIA B200' total_memory=182631MB
        hbm_bandwidth_bytes_per_s=8.0e12,       # [B200-DS]
        bf16_flops_per_s=2.25e15,               # [B200-DS]
        fp8_flops_per_s=4.5e15,                 # [B200-DS]
        fp4_flops_per_s=9.0e15,                 # [B200-DS] native FP4 MMA (tcgen05, kind::mxf4)
        sm_count=148,                           # [CUDA] multi_processor_count=148
        l2_bytes=126 * _MiB,                    # [CUDA] L2_cache_size=126MB
        boost_clock_hz=1.856e9,                 # derived: 2.25e15 / (148 x 8192); listings say 1.86 GHz
        max_sm_clock_hz=1.965e9,                # nvidia-smi max SM clock (unverified here)
        memory_clock_hz=None,
        link_bytes_per_s=900e9,                   # [NVL-DS] 1.8 TB/s bidirectional / 2
        aliases=("b200-sxm", "hgx-b200"),
        cuda_names=("NVIDIA B200",),
    ),
)

_BY_KEY: dict[str, GpuSpec] = {}
for _g in _GPUS:
    for _key in (_g.name, *_g.aliases):
        _BY_KEY[_key] = _g


def _normalize(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower()).removeprefix("nvidia-")


def gpu_names() -> list[str]:
    return [g.name for g in _GPUS]


def all_gpus() -> tuple[GpuSpec, ...]:
    return _GPUS


def get_gpu(name: str | GpuSpec) -> GpuSpec:
    """GPU spec by name or alias, case-insensitive ('h200', 'H200-SXM', 'nvidia h100')."""
    if isinstance(name, GpuSpec):
        return name
    spec = _BY_KEY.get(_normalize(name))
    if spec is None:
        spec = match_gpu(name)
    if spec is None:
        raise MoeprofError(f"unknown GPU {name!r}; valid: {', '.join(gpu_names())}")
    return spec


def match_gpu(device_name: str) -> GpuSpec | None:
    """Spec for a CUDA device name ('NVIDIA H200', 'NVIDIA H100 80GB HBM3'), else None.

    Exact match only: variants with other clocks, power or SM counts (H100 NVL, H200 NVL,
    MIG slices) return None rather than a wrong spec.
    """
    wanted = device_name.strip().lower()
    for g in _GPUS:
        if any(wanted == n.lower() for n in g.cuda_names):
            return g
    return None
