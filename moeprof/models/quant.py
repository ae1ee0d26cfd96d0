"""Quantizers and dequantizers for the weight/activation formats moeprof profiles.

All functions take and return torch tensors and work on CPU or CUDA. Conventions:

* Weights are stored "output-major" like ``nn.Linear``: ``w[E, N, K]`` (K contiguous).
* ``fp8``: e4m3 weights with one fp32 scale per output channel ``s[E, N]``
  (w ~= q * s[..., None]); activations quantized dynamically per token (row): ``a ~= q * s[T, 1]``.
* ``fp8-block``: e4m3 weights with one fp32 scale per 128x128 block ``s[E, ceil(N/128), ceil(K/128)]``;
  activations per token per 128 channels ``s[T, ceil(K/128)]``.
* ``mxfp4``: OCP MX (v1.0) E2M1 elements, one E8M0 scale (biased exponent, uint8) per 32
  consecutive K elements: ``scale[E, N, K/32]``. shared_exp = floor(log2(amax)) - emax_elem with
  emax_elem = 2 for E2M1; elements = RNE(x / 2^shared_exp) saturated to +-6.

MXFP4 storage, two layouts; K is split into groups of 32 (one scale each), each group is 16
contiguous bytes (one 16-byte vector load per row and group). K must be a multiple of 32 (GPT-OSS:
2880 = 90*32). Nibble code: bit 3 = sign, bits 2..0 = magnitude index (e1 e0 m) into E2M1_VALUES.

* "lanes" (``mxfp4``, bf16 MMA; chosen for the GEMM kernel's unpack, kernels/moe_gemm.py): the group
  is 8 little-endian 16-bit lanes (lane L = bytes 2L, 2L+1). Lane L (w = L // 2, h = L % 2) holds four
  elements in four bit slots, each placed so that ONE shift (or none) + one AND moves it to where a
  bf16 spells E2M1 * 2^-126 (e1 e0 m -> bits 8 7 6, sign -> bit 15), both lanes of a 32-bit word at
  once (a bf16x2 pair):  slot A = element 4w+h: m,e0,e1 at bits 6,7,8, sign 15 (no shift);
  slot B = 4w+2+h: bits 3,4,5 / 12 (<< 3); slot C = 4w+16+h: bits 0,1,2 / 9 (<< 6);
  slot D = 4w+18+h: bits 10,11,13 / 14 (three shifts). Word w's bf16x2 pairs are then the plane-
  ordered elements (4w, 4w+1), (4w+2, 4w+3), (4w+16, 4w+17), (4w+18, 4w+19): no byte swap, no
  activation gather in the v2 loop.
* "nibbles" (``mxfp4-w4a8``, fp8 MMA): byte pos(j) (j = 0..15) holds element j in its low nibble and
  element j+16 in its high nibble, pos(j) = (j & ~3) | PERM4[j & 3], PERM4 = (0, 2, 1, 3).
"""

from __future__ import annotations

import torch

FP8_MAX = 448.0            # e4m3fn
E2M1_MAX = 6.0
E2M1_EMAX = 2
MX_BLOCK = 32
FP8_BLOCK = 128
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)

FORMATS = ("bf16", "fp8", "fp8-block", "mxfp4", "mxfp4-w4a8")


def _fp8_dtype():
    return torch.float8_e4m3fn


# ----------------------------------------------------------------------------- FP8
def quant_fp8_rowwise(x: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize along the last dim: one scale per row. Returns (q e4m3 [..., K], scale fp32 [...])."""
    xf = x.float()
    amax = xf.abs().amax(dim=-1).clamp_min(eps)
    scale = amax / FP8_MAX
    q = (xf / scale[..., None]).clamp(-FP8_MAX, FP8_MAX).to(_fp8_dtype())
    return q, scale


def dequant_fp8_rowwise(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale[..., None].float()


def quant_fp8_groups(x: torch.Tensor, group: int = FP8_BLOCK, eps: float = 1e-12):
    """Per row, per `group` consecutive channels of the last dim (last group may be short).
    Returns (q [..., K], scale [..., ceil(K/group)])."""
    k = x.shape[-1]
    ng = -(-k // group)
    pad = ng * group - k
    xf = torch.nn.functional.pad(x.float(), (0, pad))
    xg = xf.reshape(*x.shape[:-1], ng, group)
    amax = xg.abs().amax(dim=-1).clamp_min(eps)
    scale = amax / FP8_MAX
    q = (xg / scale[..., None]).clamp(-FP8_MAX, FP8_MAX).to(_fp8_dtype())
    q = q.reshape(*x.shape[:-1], ng * group)[..., :k].contiguous()
    return q, scale


def dequant_fp8_groups(q: torch.Tensor, scale: torch.Tensor, group: int = FP8_BLOCK) -> torch.Tensor:
    k = q.shape[-1]
    s = scale.float().repeat_interleave(group, dim=-1)[..., :k]
    return q.float() * s


def quant_fp8_blocks(w: torch.Tensor, block: int = FP8_BLOCK, eps: float = 1e-12):
    """128x128 blocks over the last two dims of w[..., N, K]. Returns (q, scale[..., nN, nK])."""
    n, k = w.shape[-2:]
    nb, kb = -(-n // block), -(-k // block)
    wf = torch.nn.functional.pad(w.float(), (0, kb * block - k, 0, nb * block - n))
    wb = wf.reshape(*w.shape[:-2], nb, block, kb, block)
    amax = wb.abs().amax(dim=(-3, -1)).clamp_min(eps)  # [..., nb, kb]
    scale = amax / FP8_MAX
    q = (wb / scale[..., :, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(_fp8_dtype())
    q = q.reshape(*w.shape[:-2], nb * block, kb * block)[..., :n, :k].contiguous()
    return q, scale


def dequant_fp8_blocks(q: torch.Tensor, scale: torch.Tensor, block: int = FP8_BLOCK) -> torch.Tensor:
    n, k = q.shape[-2:]
    s = scale.float().repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)[..., :n, :k]
    return q.float() * s


# ----------------------------------------------------------------------------- E2M1 / MXFP4
def e2m1_round(x: torch.Tensor) -> torch.Tensor:
    """Round fp32 values to the nearest E2M1 value (ties to even mantissa), saturating at +-6.
    Returns the 4-bit codes (uint8, bit 3 = sign)."""
    xf = x.float()
    sign = (xf < 0) | ((xf == 0) & torch.signbit(xf))
    a = xf.abs().clamp(max=E2M1_MAX)
    a = torch.where(torch.isnan(xf), torch.zeros_like(a), a)
    # Magnitude codes 0..7 for 0, .5, 1, 1.5, 2, 3, 4, 6. Midpoints and the tie rule (RNE:
    # a tie goes to the code with an even mantissa bit, i.e. even code):
    #   0.25 -> 0 (code 0 even), 0.75 -> 1.0 (code 2), 1.25 -> 1.0 (code 2), 1.75 -> 2.0 (code 4),
    #   2.5 -> 2.0 (code 4), 3.5 -> 4.0 (code 6), 5.0 -> 4.0 (code 6).
    code = torch.zeros_like(a, dtype=torch.uint8)
    code = torch.where(a > 0.25, 1, code)
    code = torch.where(a >= 0.75, 2, code)
    code = torch.where(a > 1.25, 3, code)
    code = torch.where(a >= 1.75, 4, code)
    code = torch.where(a > 2.5, 5, code)
    code = torch.where(a >= 3.5, 6, code)
    code = torch.where(a > 5.0, 7, code)
    return (code.to(torch.uint8) | (sign.to(torch.uint8) << 3)).to(torch.uint8)


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    """4-bit codes (uint8) -> fp32 values."""
    lut = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=codes.device)
    c = codes.to(torch.int64)
    v = lut[c & 7]
    return torch.where((c & 8) != 0, -v, v)


def quant_mxfp4(w: torch.Tensor, eps: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """OCP MX quantization of w[..., N, K] (K % 32 == 0) to E2M1 codes and E8M0 scales.

    Returns (codes uint8 [..., N, K] (one code per byte, unpacked), scale_e8m0 uint8 [..., N, K/32]).
    """
    k = w.shape[-1]
    if k % MX_BLOCK:
        raise ValueError(f"mxfp4 needs K % 32 == 0, got K={k}")
    wf = w.float().reshape(*w.shape[:-1], k // MX_BLOCK, MX_BLOCK)
    amax = wf.abs().amax(dim=-1)
    # shared_exp = floor(log2(amax)) - emax_elem; amax == 0 -> smallest scale (all elements 0).
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    shared_exp = torch.floor(torch.log2(safe)) - E2M1_EMAX
    shared_exp = torch.where(amax > 0, shared_exp, torch.full_like(shared_exp, -127.0))
    shared_exp = shared_exp.clamp(-127, 127)
    scaled = wf * torch.exp2(-shared_exp)[..., None]
    codes = e2m1_round(scaled).reshape(*w.shape)
    scale = (shared_exp + 127).to(torch.uint8)
    return codes, scale


def dequant_mxfp4(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """codes uint8 [..., N, K] (unpacked) + E8M0 scale [..., N, K/32] -> fp32 [..., N, K]."""
    k = codes.shape[-1]
    v = e2m1_decode(codes).reshape(*codes.shape[:-1], k // MX_BLOCK, MX_BLOCK)
    s = torch.exp2(scale.float() - 127.0)
    return (v * s[..., None]).reshape(codes.shape)


PERM4 = (0, 2, 1, 3)
_POS16 = [(j & ~3) | PERM4[j & 3] for j in range(16)]  # plane index j -> byte position in the group

# "lanes" layout: (slot, bit positions of m, e0, e1, sign, element index for lane L = 2w + h)
_LANE_SLOTS = (
    ((6, 7, 8, 15), lambda w, h: 4 * w + h),
    ((3, 4, 5, 12), lambda w, h: 4 * w + 2 + h),
    ((0, 1, 2, 9), lambda w, h: 4 * w + 16 + h),
    ((10, 11, 13, 14), lambda w, h: 4 * w + 18 + h),
)
MX_LAYOUTS = ("lanes", "nibbles")


def _lane_index(slot: int) -> list[int]:
    return [_LANE_SLOTS[slot][1](lane // 2, lane % 2) for lane in range(8)]


def pack_mxfp4(codes: torch.Tensor, layout: str = "nibbles") -> torch.Tensor:
    """Unpacked codes [..., K] -> packed [..., K/2] uint8 in `layout` (see module doc)."""
    k = codes.shape[-1]
    if layout == "lanes":
        c = codes.to(torch.int32).reshape(*codes.shape[:-1], k // MX_BLOCK, MX_BLOCK)
        lane = torch.zeros(*c.shape[:-1], 8, dtype=torch.int32, device=codes.device)
        for s, (bits, _) in enumerate(_LANE_SLOTS):
            e = c[..., _lane_index(s)]
            for b, pos in enumerate(bits):  # b: 0 = m, 1 = e0, 2 = e1, 3 = sign (= code bit b)
                lane |= ((e >> b) & 1) << pos
        by = torch.stack([lane & 0xFF, lane >> 8], dim=-1).to(torch.uint8)
        return by.reshape(*codes.shape[:-1], k // 2).contiguous()
    if layout != "nibbles":
        raise ValueError(f"unknown mxfp4 layout {layout!r}")
    c = codes.to(torch.uint8).reshape(*codes.shape[:-1], k // MX_BLOCK, 2, MX_BLOCK // 2)
    planes = c[..., 0, :] | (c[..., 1, :] << 4)           # plane order j
    inv = torch.tensor(_POS16, device=codes.device).argsort()  # byte position -> plane index
    packed = planes[..., inv]
    return packed.reshape(*codes.shape[:-1], k // 2).contiguous()


def unpack_mxfp4(packed: torch.Tensor, layout: str = "nibbles") -> torch.Tensor:
    """Inverse of pack_mxfp4."""
    k2 = packed.shape[-1]
    if layout == "lanes":
        by = packed.to(torch.int32).reshape(*packed.shape[:-1], k2 // 16, 8, 2)
        lane = by[..., 0] | (by[..., 1] << 8)
        out = torch.zeros(*lane.shape[:-1], MX_BLOCK, dtype=torch.int32, device=packed.device)
        for s, (bits, _) in enumerate(_LANE_SLOTS):
            e = torch.zeros_like(lane)
            for b, pos in enumerate(bits):
                e |= ((lane >> pos) & 1) << b
            out[..., _lane_index(s)] = e
        return out.to(torch.uint8).reshape(*packed.shape[:-1], k2 * 2)
    if layout != "nibbles":
        raise ValueError(f"unknown mxfp4 layout {layout!r}")
    p = packed.reshape(*packed.shape[:-1], k2 // 16, 16)[..., _POS16]
    lo, hi = p & 0xF, p >> 4
    return torch.stack([lo, hi], dim=-2).reshape(*packed.shape[:-1], k2 * 2)


def pack_mxfp4_rowmajor(codes: torch.Tensor) -> torch.Tensor:
    """Plain packing (byte j = code[2j] | code[2j+1] << 4), as in OCP / triton dot_scaled / checkpoints."""
    c = codes.to(torch.uint8)
    return (c[..., 0::2] | (c[..., 1::2] << 4)).contiguous()


def dequant_packed_mxfp4(packed: torch.Tensor, scale: torch.Tensor, layout: str = "nibbles") -> torch.Tensor:
    return dequant_mxfp4(unpack_mxfp4(packed, layout), scale)


def pair_gate_up_rows(t: torch.Tensor, inter: int, half: int) -> torch.Tensor:
    """gate|up rows [E, 2I, ...] -> [E, 2P, ...] (P = I rounded up to `half`): blocks of `half` gate rows,
    each followed by the same `half` up rows, zero-padded past I, so that a 2*half-wide tile of output
    columns holds the gate and up sums of the same intermediate columns (kernels.moe_gemm GU_PAIRED)."""
    e, rest = t.shape[0], t.shape[2:]
    nb = -(-inter // half)
    out = torch.zeros(e, nb, 2, half, *rest, dtype=t.dtype, device=t.device)
    pad = nb * half - inter
    for j, part in enumerate((t[:, :inter], t[:, inter:2 * inter])):
        if pad:
            part = torch.cat([part, torch.zeros(e, pad, *rest, dtype=t.dtype, device=t.device)], dim=1)
        out[:, :, j] = part.reshape(e, nb, half, *rest)
    return out.reshape(e, 2 * nb * half, *rest)


MX_SCALE_TILE = 4  # E8M0 scales per K tile of the tiled scale layout (128 elements)


def tile_mx_scales(scale: torch.Tensor, per_tile: int = MX_SCALE_TILE) -> torch.Tensor:
    """E8M0 scales [..., N, K/32] -> K-tile-major [..., ceil(K/32/per_tile), N, per_tile] (zero padded).

    The GEMM kernel reads, per K step, the scales of BN rows: row-major they are per_tile bytes from
    each row's own 32-byte sector, a sector request per row for 4 bytes (many L2 requests for few
    bytes, which keeps L2 busy while DRAM idles); tile-major they are one contiguous run of
    BN * per_tile bytes (kernels/moe_gemm.py, STILE)."""
    g = scale.shape[-1]
    kt = -(-g // per_tile)
    out = torch.zeros(*scale.shape[:-1], kt * per_tile, dtype=scale.dtype, device=scale.device)
    out[..., :g] = scale
    out = out.reshape(*scale.shape[:-1], kt, per_tile)
    return out.movedim(-2, -3).contiguous()


MX_WEIGHT_TILE = 64  # packed bytes per row per K tile of 128 elements


def tile_mx_weights(packed: torch.Tensor, tile_bytes: int = MX_WEIGHT_TILE) -> torch.Tensor:
    """Packed MXFP4 weights [..., N, K/2] -> K-tile-major [..., ceil(K/2/tile_bytes), N, tile_bytes].

    Row-major, a K step of the GEMM reads 64 bytes of each of BN rows: half lines 1440 bytes apart,
    each 128-byte line fetched in two visits (read-once data then shows an L2 hit rate near 50 %).
    Tile-major, the step reads BN * 64 contiguous bytes. Zero padded; same byte order inside a row."""
    kb = packed.shape[-1]
    kt = -(-kb // tile_bytes)
    out = torch.zeros(*packed.shape[:-1], kt * tile_bytes, dtype=packed.dtype, device=packed.device)
    out[..., :kb] = packed
    out = out.reshape(*packed.shape[:-1], kt, tile_bytes)
    return out.movedim(-2, -3).contiguous()


def untile_mx_weights(tiles: torch.Tensor, packed_k: int) -> torch.Tensor:
    """Inverse of tile_mx_weights: [..., Kt, N, tile_bytes] -> [..., N, packed_k]."""
    t = tiles.movedim(-3, -2)
    return t.reshape(*t.shape[:-2], -1)[..., :packed_k].contiguous()


def untile_mx_scales(tiles: torch.Tensor, groups: int) -> torch.Tensor:
    """Inverse of tile_mx_scales: [..., Kt, N, per_tile] -> [..., N, groups]."""
    t = tiles.movedim(-3, -2)
    return t.reshape(*t.shape[:-2], -1)[..., :groups].contiguous()


def mx_layout(fmt: str) -> str:
    """The packed layout each MXFP4 format's kernel reads: bf16 MMA -> "lanes", fp8 MMA -> "nibbles"."""
    return "lanes" if fmt == "mxfp4" else "nibbles"


# ----------------------------------------------------------------------------- MMA-fragment layout
MMA_TILE_ROWS = 16   # weight rows per tile: the M side of mma.sync m16n8k16
MMA_CHUNK_K = 64     # K elements per lane-load of 16 bytes (4 MMA steps of 16)


def mma_tile_rows(n: int, gated_half: int | None = None) -> torch.Tensor:
    """Source row of each of the ceil(rows / 16) * 16 tile rows (-1: zero padding).

    Plain: tile t holds rows 16 t .. 16 t + 15. Gated (gemm1, rows [gate 0..I-1 | up I..2I-1],
    gated_half = I): tile t holds gate rows 8 t .. 8 t + 7 then the matching up rows I + 8 t .. , so that
    one MMA lane holds gate and up of the same output column."""
    if gated_half is None:
        nt = -(-n // MMA_TILE_ROWS)
        idx = torch.arange(nt * MMA_TILE_ROWS)
        return torch.where(idx < n, idx, torch.full_like(idx, -1))
    i = gated_half
    nt = -(-i // 8)
    j = torch.arange(nt * 8)
    gate = torch.where(j < i, j, torch.full_like(j, -1)).reshape(nt, 8)
    up = torch.where(j < i, j + i, torch.full_like(j, -1)).reshape(nt, 8)
    return torch.cat([gate, up], dim=1).reshape(-1)


def _mma_tiles(codes: torch.Tensor, scale: torch.Tensor, gated_half: int | None, dtype: torch.dtype):
    """Codes and scales of one expert in the CUDA kernels' tile-row order (mma_tile_rows): codes
    [Nt * 16, Kc * 64] in `dtype`, zero padded, and E8M0 scales [Nt * 16, Kc * 2] (uint8), padded with 127
    (2^0); with Nt, Kc."""
    n, k = codes.shape
    if k % MX_BLOCK:
        raise ValueError(f"mxfp4 needs K % 32 == 0, got K={k}")
    rows = mma_tile_rows(n, gated_half).to(codes.device)
    nt = rows.numel() // MMA_TILE_ROWS
    kc = -(-k // MMA_CHUNK_K)
    ok = rows >= 0
    c = torch.zeros(rows.numel(), kc * MMA_CHUNK_K, dtype=dtype, device=codes.device)
    c[ok, :k] = codes[rows[ok]].to(dtype)
    sp = torch.full((rows.numel(), kc * 2), 127, dtype=torch.uint8, device=codes.device)
    sp[ok, : k // MX_BLOCK] = scale[rows[ok]]
    return c, sp, nt, kc


def mma_mx_weights(codes: torch.Tensor, scale: torch.Tensor, gated_half: int | None = None):
    """One expert's E2M1 codes [N, K] (unpacked, uint8) and E8M0 scales [N, K/32] -> the layouts the
    CUDA MXFP4 kernel reads (kernels/mx_mma.cu): weights uint8 [Nt, Kc, 32, 16] and scales uint8
    [Nt, Kc, 16, 2], Nt tiles of 16 rows (mma_tile_rows), Kc = ceil(K / 64) chunks (zero padded).

    Lane L = 4 r + q of tile t, chunk c holds rows r and r + 8 and K elements 64 c + 16 q .. + 15 (one
    MX group) as four little-endian 32-bit words; word s covers K 64 c + 16 q + 4 s + (0..3): its low
    16-bit lane holds the even elements, its high lane the odd ones, in the "lanes" bit slots
    A = (row r, k), B = (row r, k + 2), C = (row r + 8, k), D = (row r + 8, k + 2). Scales: entry
    2 r + g of a tile's chunk is the byte pair (row r, row r + 8) of MX group g of the chunk, which lanes
    4 r + 2 g and 4 r + 2 g + 1 both read: each E8M0 byte is stored (and streamed from memory) once."""
    c, sp, nt, kc = _mma_tiles(codes, scale, gated_half, torch.int32)
    # [Nt, half, r, Kc, q, s, j]: row = 8 half + r, k = 64 c + 16 q + 4 s + j
    w = _lanes_words(c.reshape(nt, 2, 8, kc, 4, 4, 4))
    sp = sp.reshape(nt, 2, 8, kc, 2)                     # [Nt, half, r, Kc, group in chunk]
    s = sp.permute(0, 3, 2, 4, 1).reshape(nt, kc, 16, 2).contiguous()   # [Nt, Kc, (r, group), half]
    return w, s


def _lanes_words(c: torch.Tensor) -> torch.Tensor:
    """Codes [Nt, half, r, Kc, q, s, j] (int32) -> uint8 [Nt, Kc, 32, 16]: lane 4 r + q, word s holds
    j = 0, 2 (low 16 bits) and 1, 3 (high) of rows r (half 0) and r + 8 (half 1) in the "lanes" slots
    A = (half 0, j), B = (half 0, j + 2), C = (half 1, j), D = (half 1, j + 2)."""
    nt, kc = c.shape[0], c.shape[3]
    lanes = []
    for j0 in (0, 1):                                    # low lane: even k (j = 0, 2); high: odd
        v = torch.zeros(nt, 8, kc, 4, 4, dtype=torch.int32, device=c.device)
        for slot, (half, dj) in enumerate(((0, 0), (0, 2), (1, 0), (1, 2))):
            e = c[:, half, :, :, :, :, j0 + dj]          # [Nt, r, Kc, q, s]
            for b, pos in enumerate(_LANE_SLOTS[slot][0]):
                v |= ((e >> b) & 1) << pos
        lanes.append(v)
    word = lanes[0] | (lanes[1] << 16)                   # [Nt, r, Kc, q, s]
    by = torch.stack([(word >> (8 * i)) & 0xFF for i in range(4)], dim=-1)   # [Nt, r, Kc, q, s, 4]
    return by.permute(0, 2, 1, 3, 4, 5).reshape(nt, kc, 32, 16).to(torch.uint8).contiguous()


def unmma_mx_weights(w: torch.Tensor, s: torch.Tensor, n: int, k: int, gated_half: int | None = None):
    """Inverse of mma_mx_weights (codes [N, K], scales [N, K/32]), written from the same lane map."""
    nt, kc = w.shape[0], w.shape[1]
    by = w.to(torch.int32).reshape(nt, kc, 8, 4, 4, 4)               # [Nt, Kc, r, q, s, byte]
    word = by[..., 0] | (by[..., 1] << 8) | (by[..., 2] << 16) | (by[..., 3] << 24)
    c = torch.zeros(nt, 2, 8, kc, 4, 4, 4, dtype=torch.int32, device=w.device)
    for j0 in (0, 1):
        lane = (word >> (16 * j0)) & 0xFFFF                          # [Nt, Kc, r, q, s]
        for slot, (half, dj) in enumerate(((0, 0), (0, 2), (1, 0), (1, 2))):
            e = torch.zeros_like(lane)
            for b, pos in enumerate(_LANE_SLOTS[slot][0]):
                e |= ((lane >> pos) & 1) << b
            c[:, half, :, :, :, :, j0 + dj] = e.permute(0, 2, 1, 3, 4)
    c = c.reshape(nt * 16, kc * MMA_CHUNK_K)
    rows = mma_tile_rows(n, gated_half).to(w.device)
    ok = rows >= 0
    codes = torch.zeros(n, k, dtype=torch.uint8, device=w.device)
    codes[rows[ok]] = c[ok, :k].to(torch.uint8)
    sc = s.reshape(nt, kc, 8, 2, 2)                                   # [Nt, Kc, r, g, half]
    sc = sc.permute(0, 4, 2, 1, 3).reshape(nt * 16, kc * 2)           # [Nt, half, r, Kc, g]
    scales = torch.zeros(n, k // MX_BLOCK, dtype=torch.uint8, device=w.device)
    scales[rows[ok]] = sc[ok, : k // MX_BLOCK]
    return codes, scales


# ----------------------------------------------------------------------------- warpgroup-MMA layout
def _chunk_k_order(kc: int, order: torch.Tensor, device) -> torch.Tensor:
    """Column index of every position of kc chunks of MMA_CHUNK_K, each chunk in `order` (K within it)."""
    return (torch.arange(kc).repeat_interleave(MMA_CHUNK_K) * MMA_CHUNK_K + order.repeat(kc)).to(device)


# K position within a chunk of the code a lane's word holds, in the "lanes" packer's (q, s, j) order:
# word s of lane q holds, as its j-th element, K 16 s + 2 q + (j & 1) + 8 (j >> 1) (the m16n8k16 / wgmma
# A fragment in the natural K order: the activations need no permutation)
_WG_K = torch.tensor([16 * s + 2 * q + (j & 1) + 8 * (j >> 1) for q in range(4) for s in range(4) for j in range(4)])


def wg_mx_weights(codes: torch.Tensor, scale: torch.Tensor, gated_half: int | None = None):
    """One expert's E2M1 codes [N, K] (unpacked, uint8) and E8M0 scales [N, K/32] -> the layouts the
    prefill MXFP4 kernel reads (kernels/mx_wgmma.cu): weights uint8 [Nt, Kc, 32, 16] and scales uint8
    [Nt, Kc, 32, 4], the tiles of mma_tile_rows.

    Lane L = 4 r + q of tile t, chunk c holds rows r and r + 8; its word s (MMA step s) covers K
    64 c + 16 s + (2 q, 2 q + 1) and (2 q + 8, 2 q + 9) in the "lanes" slots A = (row r, k, k + 1),
    B = (row r, k + 8, k + 9), C = (row r + 8, k, k + 1), D = (row r + 8, k + 8, k + 9). Its scale bytes
    are (row r, group 2 c), (r + 8, 2 c), (r, 2 c + 1), (r + 8, 2 c + 1): steps 0-1 lie in group 2 c,
    steps 2-3 in 2 c + 1."""
    c, sp, nt, kc = _mma_tiles(codes, scale, gated_half, torch.int32)
    # each chunk's K reordered so that the "lanes" packer's position 16 q + 4 s + j holds _WG_K
    w = _lanes_words(c[:, _chunk_k_order(kc, _WG_K, c.device)].reshape(nt, 2, 8, kc, 4, 4, 4))
    sp = sp.reshape(nt, 2, 8, kc, 2).permute(0, 3, 2, 4, 1)          # [Nt, Kc, r, group, half]
    s = sp.reshape(nt, kc, 8, 1, 4).expand(nt, kc, 8, 4, 4).reshape(nt, kc, 32, 4).contiguous()
    return w, s


# ----------------------------------------------------------------------------- e4m3 MMA-fragment layout
MMA8_E4M3_MASK = 0x9C9C9C9C   # the bits of an e4m3 byte that E2M1 occupies: sign 7, e1 e0 m at 4..2
MMA8_SCALE_BIAS = 6           # stored E8M0 byte + 6: as an fp32 exponent field it is 2^(S - 121)
MMA8_SCALE_MAX = 255 - 1 - MMA8_SCALE_BIAS   # largest E8M0 byte the layout holds (248)


def _e2m1_to_e4m3_bits(codes: torch.Tensor) -> torch.Tensor:
    """E2M1 codes -> the e4m3 byte of value E2M1 * 2^-6 (sign to bit 7, e1 e0 m to bits 4..2)."""
    c = codes.to(torch.int64)
    return ((c & 8) << 4) | ((c & 7) << 2)


def _e4m3_bits_to_e2m1(b: torch.Tensor) -> torch.Tensor:
    return ((b >> 4) & 8) | ((b >> 2) & 7)


def _mma8_word(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Two registers of 4 e4m3 bytes (int64 words, bits only in MMA8_E4M3_MASK) -> the stored word x
    with x & M == lo and ((x >> 2) ^ (x << 2)) & M == hi (32-bit logical shifts; the kernel's unpack).

    Per byte b (bits j of byte b are bit 8 b + j of x), x's bits 2, 3, 4, 7 are lo's; hi's bits give
    bit 0 = hi_2 ^ x_4, bit 6 = hi_4 ^ x_2, bit 1 = hi_3 ^ x_5, and bit 5 = hi_7 ^ (bit 1 of byte b + 1)
    (0 above the top byte): a chain solved from the top byte down."""
    bit = lambda v, b, j: (v >> (8 * b + j)) & 1
    x = lo.clone()
    above = torch.zeros_like(lo)           # bit 1 of byte b + 1
    for b in (3, 2, 1, 0):
        x5 = bit(hi, b, 7) ^ above
        x1 = bit(hi, b, 3) ^ x5
        x0 = bit(hi, b, 2) ^ bit(lo, b, 4)
        x6 = bit(hi, b, 4) ^ bit(lo, b, 2)
        x |= (x0 << (8 * b)) | (x1 << (8 * b + 1)) | (x5 << (8 * b + 5)) | (x6 << (8 * b + 6))
        above = x1
    return x


def _mma8_regs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's unpack of a stored word (int64 holding 32 bits) -> (lo, hi) e4m3 registers."""
    m = MMA8_E4M3_MASK
    return x & m, (((x >> 2) ^ (x << 2)) & 0xFFFFFFFF) & m


def mma8_mx_weights(codes: torch.Tensor, scale: torch.Tensor, gated_half: int | None = None):
    """One expert's E2M1 codes [N, K] (unpacked, uint8) and E8M0 scales [N, K/32] -> the layouts the
    CUDA W4A8 kernel reads (kernels/mx_mma.cu, mx_w4a8_body): weights uint8 [Nt, Kc, 32, 16] and scales
    uint8 [Nt, Kc, 8, 4], Nt tiles of 16 rows (mma_tile_rows), Kc = ceil(K / 64) chunks (zero padded).

    Lane L = 4 g + t of tile n, chunk c, step st (MX group 2 c + st) holds rows g and g + 8, K elements
    64 c + 32 st + 8 t + (0..7), as one little-endian 32-bit word per row (_mma8_word of the e4m3 bytes
    of elements 0-3 and 4-7); the lane's 16 bytes are the words (st 0, g), (0, g + 8), (1, g), (1, g + 8).
    Scales: S + 6 of (g, 2 c), (g + 8, 2 c), (g, 2 c + 1), (g + 8, 2 c + 1) at [n, c, g]; S must be <= 248."""
    c, sp, nt, kc = _mma_tiles(codes, scale, gated_half, torch.int64)
    if scale.numel() and int(scale.max()) > MMA8_SCALE_MAX:
        raise ValueError(f"E8M0 scales above {MMA8_SCALE_MAX} do not fit the W4A8 kernel's layout")
    e = _e2m1_to_e4m3_bits(c).reshape(nt, 2, 8, kc, 2, 4, 2, 4)   # [Nt, half, g, Kc, st, t, lo/hi, byte]
    shifts = torch.tensor([0, 8, 16, 24], device=codes.device)
    regs = (e << shifts).sum(-1)                                   # [Nt, half, g, Kc, st, t, lo/hi]
    x = _mma8_word(regs[..., 0], regs[..., 1])                     # [Nt, half, g, Kc, st, t]
    by = (x[..., None] >> shifts) & 0xFF                           # [..., 4 bytes]
    # lane (g, t): words (st, half) in the order (0, 0), (0, 1), (1, 0), (1, 1)
    w = by.permute(0, 3, 2, 5, 4, 1, 6).reshape(nt, kc, 32, 16).to(torch.uint8).contiguous()
    sp = (sp.to(torch.int64) + MMA8_SCALE_BIAS).reshape(nt, 2, 8, kc, 2)           # [Nt, half, g, Kc, group in chunk]
    s = sp.permute(0, 3, 2, 4, 1).reshape(nt, kc, 8, 4).to(torch.uint8).contiguous()
    return w, s


def unmma8_mx_weights(w: torch.Tensor, s: torch.Tensor, n: int, k: int, gated_half: int | None = None):
    """Inverse of mma8_mx_weights (codes [N, K], scales [N, K/32]) through the kernel's unpack."""
    nt, kc = w.shape[0], w.shape[1]
    by = w.to(torch.int64).reshape(nt, kc, 8, 4, 2, 2, 4)          # [Nt, Kc, g, t, st, half, byte]
    x = by[..., 0] | (by[..., 1] << 8) | (by[..., 2] << 16) | (by[..., 3] << 24)
    lo, hi = _mma8_regs(x)
    regs = torch.stack([lo, hi], dim=-1)                           # [Nt, Kc, g, t, st, half, lo/hi]
    e = (regs[..., None] >> torch.tensor([0, 8, 16, 24], device=w.device)) & 0xFF
    c = _e4m3_bits_to_e2m1(e)                                      # [Nt, Kc, g, t, st, half, lo/hi, byte]
    c = c.permute(0, 5, 2, 1, 4, 3, 6, 7).reshape(nt * 16, kc * MMA_CHUNK_K)
    rows = mma_tile_rows(n, gated_half).to(w.device)
    ok = rows >= 0
    codes = torch.zeros(n, k, dtype=torch.uint8, device=w.device)
    codes[rows[ok]] = c[ok, :k].to(torch.uint8)
    sc = s.to(torch.int64).reshape(nt, kc, 8, 2, 2) - MMA8_SCALE_BIAS   # [Nt, Kc, g, group, half]
    sc = sc.permute(0, 4, 2, 1, 3).reshape(nt * 16, kc * 2)
    scales = torch.zeros(n, k // MX_BLOCK, dtype=torch.uint8, device=w.device)
    scales[rows[ok]] = sc[ok, : k // MX_BLOCK].to(torch.uint8)
    return codes, scales


# ----------------------------------------------------------------------------- e4m3 warpgroup-MMA layout
# K position within a chunk of the code the W4A8 packer (mma8_mx_weights) puts at its position
# 32 st + 8 t + j: the wgmma m64nNk32 e4m3 A fragment in the natural K order (register 0 / 2 of lane t:
# K 4 t .. 4 t + 3 / 16 + 4 t .. of the step's 32), so the activations need no permutation
_WG8_K = torch.tensor([32 * st + 4 * t + j + (12 if j >= 4 else 0) for st in range(2) for t in range(4) for j in range(8)])
# largest difference between the E8M0 bytes of one weight row that the e4m3 prefill kernel takes: its sums
# are kept in units of the current MX group's scale, so they grow by 2^spread at most (fp32 holds 2^127)
WG8_SCALE_SPREAD = 96


def mx_scale_spread(scale: torch.Tensor) -> int:
    """Largest (max - min) of the E8M0 bytes along the last dimension (one weight row's groups)."""
    if not scale.numel():
        return 0
    s = scale.to(torch.int16)
    return int((s.amax(-1) - s.amin(-1)).max())


def wg8_mx_weights(codes: torch.Tensor, scale: torch.Tensor, gated_half: int | None = None):
    """One expert's E2M1 codes [N, K] (unpacked, uint8, K % 64 == 0) and E8M0 scales [N, K/32] -> the
    layouts the e4m3 prefill kernel reads (kernels/mx_wgmma.cu, the mx_wg8 kernels): weights uint8
    [Nt, Kc, 32, 16] and scales uint8 [Nt, Kc, 8, 4], the tiles of mma_tile_rows.

    The bytes are those of mma8_mx_weights (same unpack, same scale bytes S + 6) with each chunk's K
    reordered: lane L = 4 r + q, step st (MX group 2 c + st) holds rows r and r + 8, K 64 c + 32 st +
    4 q + (0..3) (its register 0 / 1: rows r / r + 8) and + 16 (registers 2 / 3). Rows whose bytes differ
    by more than WG8_SCALE_SPREAD are the caller's to refuse (the layer keeps the bf16 prefill kernel)."""
    return mma8_mx_weights(_wg8_k_order(codes), scale, gated_half)


def _wg8_k_order(codes: torch.Tensor) -> torch.Tensor:
    """Codes [N, K] with each chunk's K in the e4m3 prefill kernel's fragment order (_WG8_K)."""
    k = codes.shape[1]
    if k % MMA_CHUNK_K:
        raise ValueError(f"the e4m3 prefill layout needs K % {MMA_CHUNK_K} == 0, got K={k}")
    return codes[:, _chunk_k_order(k // MMA_CHUNK_K, _WG8_K, codes.device)]


# E8M0 bytes within one weight row that the table form of the e4m3 prefill kernel takes: each group's
# power of two 2^q, q = S - Sref with Sref = max(the row's largest byte - 6, 1) (2^(Sref - 127), which the
# epilogue applies, stays a normal fp32 number), must make all 8 E2M1 magnitudes normal e4m3 numbers
# (q in -5 .. 6): a spread of 11 at most
WG8_LUT_SCALE_SPREAD = 11
WG8_LUT_Q_BIAS = 5          # stored byte Q = q + 5 (0 .. 11)


def wg8_lut_eligible(scale: torch.Tensor) -> bool:
    """Whether E8M0 scales [..., groups] fit the table form: every row within WG8_LUT_SCALE_SPREAD."""
    return mx_scale_spread(scale) <= WG8_LUT_SCALE_SPREAD


def wg8_lut_mx_weights(codes: torch.Tensor, scale: torch.Tensor, gated_half: int | None = None):
    """One expert's E2M1 codes [N, K] (unpacked, uint8, K % 64 == 0) and E8M0 scales [N, K/32] -> the
    table form of the e4m3 prefill kernel (kernels/mx_wgmma.cu, the mx_wg8l kernels, lut_word): weights
    uint8 [Nt, Kc, 32, 16] and scales uint8 [Nt, Kc + 1, 8, 4], the tiles of mma_tile_rows.

    Lane L = 4 r + q, chunk c holds the words (step 0, row r), (0, r + 8), (1, r), (1, r + 8) of the K
    elements of wg8_mx_weights (elements 0-3: K 64 c + 32 st + 4 q + (0..3), 4-7: + 16); within a word
    element j (0-3) has its magnitude bits (e1 e0 m) in nibble j and its sign in bit 8 j + 7, element 4 + j
    its magnitude in nibble 4 + j and its sign in bit 8 j + 3. Scale bytes per chunk and row pair:
    Q = S - Sref + WG8_LUT_Q_BIAS of (r, 2 c), (r + 8, 2 c), (r, 2 c + 1), (r + 8, 2 c + 1), Sref =
    max(the row's largest byte - 6, 1); the chunk after the last holds Sref of rows r and r + 8 in bytes 0
    and 1. Rows outside WG8_LUT_SCALE_SPREAD raise (wg8_lut_eligible first)."""
    ordered = _wg8_k_order(codes)
    if not wg8_lut_eligible(scale):
        raise ValueError(f"E8M0 scales spread over more than {WG8_LUT_SCALE_SPREAD} in a row: not the table form")
    c, sp, nt, kc = _mma_tiles(ordered, scale, gated_half, torch.int64)
    sp = sp.to(torch.int64)                                        # [Nt * 16, Kc * 2], padding rows 127
    sref = (sp.amax(-1) - 6).clamp_min(1)                          # [Nt * 16]
    qb = sp - sref[:, None] + WG8_LUT_Q_BIAS                       # 0 .. 11
    e = c.reshape(nt, 2, 8, kc, 2, 4, 2, 4)                        # [Nt, half, r, Kc, st, q, lo/hi, j]
    mag, sign = e & 7, (e >> 3) & 1
    j = torch.arange(4, device=codes.device)
    x = ((mag[..., 0, :] << (4 * j)) | (sign[..., 0, :] << (8 * j + 7))
         | (mag[..., 1, :] << (16 + 4 * j)) | (sign[..., 1, :] << (8 * j + 3))).sum(-1)   # [Nt, half, r, Kc, st, q]
    shifts = torch.tensor([0, 8, 16, 24], device=codes.device)
    by = (x[..., None] >> shifts) & 0xFF
    w = by.permute(0, 3, 2, 5, 4, 1, 6).reshape(nt, kc, 32, 16).to(torch.uint8).contiguous()
    s = torch.zeros(nt, kc + 1, 8, 4, dtype=torch.uint8, device=codes.device)
    s[:, :kc] = qb.reshape(nt, 2, 8, kc, 2).permute(0, 3, 2, 4, 1).reshape(nt, kc, 8, 4).to(torch.uint8)
    s[:, kc, :, 0:2] = sref.reshape(nt, 2, 8).permute(0, 2, 1).to(torch.uint8)
    return w, s
