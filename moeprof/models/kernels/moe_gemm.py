"""Triton grouped-GEMM kernels for one MoE layer (GPT-OSS semantics), BF16 / FP8 / MXFP4 weights.

Layout (all weights output-major, K contiguous; E = local experts):
  w1 (gate_up) [E, 2*I, K]: rows 0..I-1 are the gate projection, rows I..2I-1 the up projection.
     GPT-OSS checkpoints interleave them (gate = column 0::2, up = 1::2 of gate_up); we de-interleave
     once at load time so one program can read matching gate and up tiles and apply the clamped
     SwiGLU in its epilogue.  b1 [E, 2*I] the same way.
  w2 (down)    [E, H, I], b2 [E, H].
  fp8:       e4m3 values, fp32 scale per output row  s[E, rows].
  fp8-block: e4m3 values, fp32 scale per 128x128 block; for w1 the gate and up halves are blocked
             separately: s1[E, 2*ceil(I/128), ceil(K/128)] (up blocks start at ceil(I/128)).
  mxfp4:     "lanes" pack (mxfp4) / "nibbles" pack (mxfp4-w4a8), see models/quant.py: uint8
             [E, rows, K/2] + E8M0 scales uint8 [E, rows, K/32]. For mxfp4 the workload hands the
             kernel K-tile-major copies instead (quant.tile_mx_weights / tile_mx_scales: [E, Kt, rows,
             64] and [E, Kt, rows, 4], Kt = ceil(K/128); WTILE / STILE below): a K step of BN rows is
             then one contiguous run of whole 128-byte lines instead of BN short row pieces.

Tokens are sorted by expert (moe_align, below): each expert's rows are padded to BM; block b of BM
rows belongs to expert_ids[b] (-1: rows routed to experts of another EP rank, written as zeros).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import torch
import triton
import triton.language as tl

from moeprof.models import quant, reference
from moeprof.models.kernels import mx_cuda

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Weight-format codes (the kernel's constexpr WF) and activation-quant codes (constexpr AQ). They are
# tl.constexpr so that the kernel can compare against the names; they compare equal to plain ints.
WF_BF16, WF_FP8, WF_FP8B, WF_MX_BF16, WF_MX_FP8 = (tl.constexpr(c) for c in range(5))
AQ_NONE, AQ_ROW, AQ_GROUP = (tl.constexpr(c) for c in range(3))
MX_CODES = (int(WF_MX_BF16), int(WF_MX_FP8))

FMT_CODES = {
    "bf16": (int(WF_BF16), int(AQ_NONE)),
    "fp8": (int(WF_FP8), int(AQ_ROW)),
    "fp8-block": (int(WF_FP8B), int(AQ_GROUP)),
    "mxfp4": (int(WF_MX_BF16), int(AQ_NONE)),
    "mxfp4-w4a8": (int(WF_MX_FP8), int(AQ_ROW)),
}

# GPT-OSS's clamped SwiGLU and the e4m3 range, from their one definition (reference.py, quant.py)
_SWIGLU_ALPHA = tl.constexpr(reference.SWIGLU_ALPHA)
_SWIGLU_LIMIT = tl.constexpr(reference.SWIGLU_LIMIT)
_FP8_MAX = tl.constexpr(quant.FP8_MAX)


# ----------------------------------------------------------------------------- E2M1 unpack
# "lanes" layout (models/quant.py): per 16-bit lane, slot A needs no shift, B << 3, C << 6, D three
# shifts; each result is E2M1 * 2^-126 as bf16 (0.5 -> subnormal, 0 -> 0) in both lanes of a word, and
# one mul.bf16x2 by 2^(S-1) (bias word, built once per MX group by the caller: ((S + 126) << 7) in
# each 16-bit half) applies the E8M0 scale exactly for S <= 128. Per 32-bit word (8 elements):
# 1 + 2 + 2 + 5 bit ops + 4 mul = 15 instructions, ~1.9 per element (the nibble unpack: ~3).


# The "lanes" unpack shared by both loops: input word $4, bias word b (2^(S-1) as bf16x2) -> qa..qd,
# slot A..D of both 16-bit lanes as bf16x2 (E2M1 * 2^(S-127)); the loops differ only in how b is
# formed and how qa..qd are handed out.
_LANES_CORE = """
        mov.b32 m1, 0x01000100;
        mov.b32 m2, 0x80008000;
        and.b32 t, $4, 0x81C081C0;
        mul.rn.bf16x2 qa, t, b;
        shl.b32 t, $4, 3;
        and.b32 t, t, 0x81C081C0;
        mul.rn.bf16x2 qb, t, b;
        shl.b32 t, $4, 6;
        and.b32 t, t, 0x81C081C0;
        mul.rn.bf16x2 qc, t, b;
        shr.b32 t, $4, 4;
        and.b32 u, t, 0x00C000C0;
        shr.b32 t, $4, 5;
        lop3.b32 u, u, t, m1, 0xF8;
        shl.b32 t, $4, 1;
        lop3.b32 u, u, t, m2, 0xF8;
        mul.rn.bf16x2 qd, u, b;
"""
_LANES_DECL = "{\n        .reg .b32 t, u, b, m1, m2, qa, qb, qc, qd;\n"
_LANES_ASM_V2 = tl.constexpr(_LANES_DECL + "        mov.b32 b, $5;" + _LANES_CORE + """
        mov.b32 $0, qa;
        mov.b32 $1, qb;
        mov.b32 $2, qc;
        mov.b32 $3, qd;
        }""")
_LANES_ASM_REGA = tl.constexpr(_LANES_DECL + "        prmt.b32 b, $5, $6, 0x7610;" + _LANES_CORE + """
        prmt.b32 $0, qa, qb, 0x5410;
        prmt.b32 $1, qa, qb, 0x7632;
        prmt.b32 $2, qc, qd, 0x5410;
        prmt.b32 $3, qc, qd, 0x7632;
        }""")


@triton.jit
def _e2m1_lanes_bf16_asm(w, sb):
    """v2 loop (MXV=1: blocked layout, the 4 packed bytes of a register are 4 consecutive bytes of
    one row and MX group): packed "lanes" uint8 tile + bias tile (uint16, (S + 126) << 7, same shape)
    -> (lo, hi) bf16 tiles = E2M1 * 2^(S-127) in plane order: word w gives lo elements (4w, 4w+1),
    (4w+2, 4w+3) and hi elements (4w, 4w+1), (4w+2, 4w+3) of the 16-wide planes. Only the first bias
    register ($5: elements 0, 1) is read; both halves of it hold the group's bias."""
    return tl.inline_asm_elementwise(
        asm=_LANES_ASM_V2,
        constraints="=r,=r,=r,=r,r,r,r",
        args=[w, sb],
        dtype=(tl.bfloat16, tl.bfloat16),
        is_pure=True,
        pack=4,
    )


@triton.jit
def _e2m1_lanes_bf16_asm_rega(w, sb):
    """Swapped A/B (MXV=2: the register-A dot-operand layout packs (row r, k), (r, k+1), (r+8, k),
    (r+8, k+1), k even, so the low 16 bits are row r's lane k/2 and the high 16 bits row r+8's):
    the same bit ops give slot X of both rows in one word; the bias word takes row r's bias in the
    low half and row r+8's in the high half, and two prmt per pair of slots regroup the results by
    row: lo element k <- slot A, k+1 <- slot B, hi element k <- C, k+1 <- D (so plane position
    j holds element (j & ~3) | ((j & 1) << 1) | ((j & 2) >> 1): the caller gathers A to match)."""
    return tl.inline_asm_elementwise(
        asm=_LANES_ASM_REGA,
        constraints="=r,=r,=r,=r,r,r,r",
        args=[w, sb],
        dtype=(tl.bfloat16, tl.bfloat16),
        is_pure=True,
        pack=4,
    )


@triton.jit
def _e2m1x4_to_fp8_asm(w):
    """Packed uint8 tile -> (lo, hi) e4m3 tiles holding E2M1 * 2^-6 exactly (e4m3 subnormals),
    four elements per instruction. Output byte i comes from input byte i (no swap)."""
    lo, hi = tl.inline_asm_elementwise(
        asm="""
        {
        .reg .b32 t0, t1;
        shl.b32 t0, $2, 2;
        shl.b32 t1, $2, 4;
        and.b32 t0, t0, 0x1C1C1C1C;
        and.b32 t1, t1, 0x80808080;
        or.b32 $0, t0, t1;
        shr.b32 t0, $2, 2;
        and.b32 t0, t0, 0x1C1C1C1C;
        and.b32 t1, $2, 0x80808080;
        or.b32 $1, t0, t1;
        }
        """,
        constraints="=r,=r,r",
        args=[w],
        dtype=(tl.uint8, tl.uint8),
        is_pure=True,
        pack=4,
    )
    return lo.to(tl.float8e4nv, bitcast=True), hi.to(tl.float8e4nv, bitcast=True)


@triton.jit
def _e2m1_nibble_to_bf16_bits(nib, sexp):
    """Integer-only E2M1 -> bf16 bit pattern (int32), with 2^(sexp) folded into the exponent.
    Used by the interpreter path (and as a fallback): ~10 integer ops per element."""
    em = nib & 7
    sign = (nib & 8) << 12
    # exponent field: e + S - 1 (e >= 1), S - 1 for the subnormal 0.5; <= 0 flushes to zero (the
    # value is below 2^-126: only all-zero MX groups, whose scale byte is 0, get there in practice)
    fe = tl.where(em >= 2, (em >> 1) + 126 + sexp, 126 + sexp)
    mag = tl.where((em >= 2) & (fe > 0), (fe << 7) | ((em & 1) << 6), tl.where((em == 1) & (fe > 0), fe << 7, 0))
    return mag | sign


@triton.jit
def _e2m1_nibble_to_fp8_bits(nib):
    """Integer-only E2M1 -> e4m3 bits of E2M1 * 2^-6 (subnormal trick), int32."""
    return ((nib & 7) << 2) | ((nib & 8) << 4)


@triton.jit
def _swiglu_gptoss(gate, up):
    """GPT-OSS clamped SwiGLU (reference.swiglu_gptoss) on fp32 tiles."""
    gate = tl.minimum(gate, _SWIGLU_LIMIT)
    up = tl.minimum(tl.maximum(up, -_SWIGLU_LIMIT), _SWIGLU_LIMIT)
    glu = gate * tl.sigmoid(gate * _SWIGLU_ALPHA)
    return (up + 1.0) * glu


@triton.jit
def _mx_load(w_e, ws_e, nrow, kt, K, stride_wn, stride_wsn, gg, jpos, G: tl.constexpr,
             UNPACK_ASM: tl.constexpr, EVEN_K: tl.constexpr, WTILE: tl.constexpr, STILE: tl.constexpr):
    """Packed weights [BN, G, 16] (+ the lane's second byte for the integer unpack) and E8M0 scales
    [BN, G] of K tile kt for weight rows nrow."""
    k0 = kt * (G * 32)
    if WTILE:
        # K-tile-major weights [E, Kt, N, 64] (quant.tile_mx_weights): the BN rows' bytes of a K step
        # are one contiguous run (whole 128-byte lines); stride_wn = tile stride
        gabs = kt * G + gg
        wcol = (gabs // 4) * stride_wn + (gabs % 4) * 16
        wp = w_e + nrow[:, None, None] * 64 + (wcol[:, None] + jpos[None, :])[None, :, :]
    else:
        boff = gg[:, None] * 16 + jpos[None, :]         # [G, 16] byte offsets inside the tile
        wp = w_e + nrow[:, None, None] * stride_wn + (k0 // 2 + boff)[None, :, :]
    if STILE:
        # K-tile-major scales [E, Kt, N, 4] (quant.tile_mx_scales): the BN rows' scales of a K step
        # are one contiguous run, padded to whole tiles (read unmasked)
        gabs = kt * G + gg
        sp = ws_e + nrow[:, None] * 4 + ((gabs // 4) * stride_wsn + gabs % 4)[None, :]
    else:
        sp = ws_e + nrow[:, None] * stride_wsn + (kt * G + gg)[None, :]
    if EVEN_K:
        wb = tl.load(wp)
        sc = tl.load(sp)
        wb1 = wb
        if not UNPACK_ASM:
            wb1 = tl.load(wp + 1)
    else:
        # tiled layouts are zero-padded to whole K tiles: read unmasked (the activations beyond K
        # are masked to zero)
        gm = (k0 // 32 + gg) < (K // 32)
        if WTILE:
            wb = tl.load(wp)
        else:
            wb = tl.load(wp, mask=gm[None, :, None], other=0)
        if STILE:
            sc = tl.load(sp)
        else:
            sc = tl.load(sp, mask=gm[None, :], other=0)
        wb1 = wb
        if not UNPACK_ASM:
            if WTILE:
                wb1 = tl.load(wp + 1)
            else:
                wb1 = tl.load(wp + 1, mask=gm[None, :, None], other=0)
    return wb, wb1, sc


@triton.jit
def _mx_unpack(wb, wb1, sc, jj, BN: tl.constexpr, BK: tl.constexpr, G: tl.constexpr,
               UNPACK_ASM: tl.constexpr, BIG_SCALE: tl.constexpr, MXV: tl.constexpr):
    """Packed "lanes" tile + E8M0 scales -> (plane 0, plane 1) bf16 tiles [BN, BK/2], scale applied."""
    if UNPACK_ASM:
        # bias 2^(S-1) as bf16 bits, once per MX group; big scales: 2^126 + a multiply
        if BIG_SCALE:
            sb = tl.full((BN, G), (127 + 126) << 7, tl.int32)
        else:
            sb = (sc.to(tl.int32) + 126) << 7
        sb3 = tl.broadcast_to(sb.to(tl.uint16)[:, :, None], (BN, G, 16))
        if MXV == 2:
            w_lo, w_hi = _e2m1_lanes_bf16_asm_rega(wb, sb3)
        else:
            w_lo, w_hi = _e2m1_lanes_bf16_asm(wb, sb3)
        if BIG_SCALE:
            f = tl.exp2((sc.to(tl.int32) - 127).to(tl.float32))[:, :, None]
            w_lo = (w_lo.to(tl.float32) * f).to(tl.bfloat16)
            w_hi = (w_hi.to(tl.float32) * f).to(tl.bfloat16)
    else:
        # integer unpack of the "lanes" layout (plane order): element j in slot A
        # (j & 2 == 0) or B, element j + 16 in slot C or D of the same lane
        lane = wb.to(tl.int32) | (wb1.to(tl.int32) << 8)
        sexp = (sc.to(tl.int32) - 127)[:, :, None]
        slot_b = ((jj & 2) != 0)[None, None, :]
        n_lo = tl.where(slot_b, ((lane >> 3) & 7) | ((lane >> 9) & 8),
                        ((lane >> 6) & 7) | ((lane >> 12) & 8))
        n_hi = tl.where(slot_b, ((lane >> 10) & 3) | ((lane >> 11) & 4) | ((lane >> 11) & 8),
                        (lane & 7) | ((lane >> 6) & 8))
        w_lo = _e2m1_nibble_to_bf16_bits(n_lo, sexp).to(tl.int16).to(tl.bfloat16, bitcast=True)
        w_hi = _e2m1_nibble_to_bf16_bits(n_hi, sexp).to(tl.int16).to(tl.bfloat16, bitcast=True)
    return tl.reshape(w_lo, (BN, BK // 2)), tl.reshape(w_hi, (BN, BK // 2))


@triton.jit
def _mx_a_t_load(a_t_ptr, k0, a_lo_cols, tok_mask, k_end):
    """Activation tile of the swapped loop, transposed: (columns of plane 0, plane 1) [BK/2, BM];
    columns at or past k_end read as zero."""
    akm = (k0 + a_lo_cols) < k_end
    a_lo_t = tl.load(a_t_ptr + (k0 + a_lo_cols)[:, None], mask=tok_mask[None, :] & akm[:, None], other=0.0)
    a_hi_t = tl.load(a_t_ptr + (k0 + 16 + a_lo_cols)[:, None], mask=tok_mask[None, :] & akm[:, None], other=0.0)
    return a_lo_t, a_hi_t


@triton.jit
def _mx_dot_t(acc_t, wb, wb1, sc, a_lo_t, a_hi_t, jj, BN: tl.constexpr, BK: tl.constexpr, G: tl.constexpr,
              UNPACK_ASM: tl.constexpr, BIG_SCALE: tl.constexpr, DOT_F32: tl.constexpr):
    """acc_t [BN, BM] += unpacked weight tile [BN, BK] @ activation tile^T (swapped A/B)."""
    w_lo, w_hi = _mx_unpack(wb, wb1, sc, jj, BN, BK, G, UNPACK_ASM, BIG_SCALE, 2)
    acc_t = _dot(w_lo, a_lo_t, acc_t, DOT_F32)
    return _dot(w_hi, a_hi_t, acc_t, DOT_F32)


# ----------------------------------------------------------------------------- grouped GEMM
@triton.jit
def _dot(a, b, acc, F32: tl.constexpr):
    """tl.dot; F32 upcasts the operands first (the Triton 3.9 interpreter's bf16/fp8 dot is wrong on
    CPU: it returns garbage ~1e10 for bf16 operands; the compiled GPU path never sets F32)."""
    if F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    return tl.dot(a, b, acc)


@triton.jit
def moe_gemm_kernel(
    a_ptr, a_s_ptr, w_ptr, w_s_ptr, b_ptr, c_ptr, topk_w_ptr,
    sorted_ids_ptr, expert_ids_ptr, npp_ptr,
    N, K, num_valid, up_off, up_soff,
    stride_am, stride_asm,
    stride_we, stride_wn, stride_wse, stride_wsn, stride_be, stride_cm,
    A_DIV: tl.constexpr, WF: tl.constexpr, AQ: tl.constexpr,
    GATED: tl.constexpr, HAS_BIAS: tl.constexpr, MUL_ROUTED: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
    EVEN_K: tl.constexpr, UNPACK_ASM: tl.constexpr,
    DOT_F32: tl.constexpr = False, GPI: tl.constexpr = 1, MXV: tl.constexpr = 0,
    BIG_SCALE: tl.constexpr = False, SPLIT_K: tl.constexpr = 1, C_DIV: tl.constexpr = 1,
    STILE: tl.constexpr = False, WTILE: tl.constexpr = False,
    KPAIR: tl.constexpr = False, SWAP_AB: tl.constexpr = False, GU_ONE_DOT: tl.constexpr = False,
    GU_PAIRED: tl.constexpr = False,
):
    # SPLIT_K > 1 (decode: few experts -> few tiles): program_id(1) takes one BK-aligned K chunk and
    # adds its fp32 partial into c with atomics (c zeroed by the caller). Gated: c is fp32
    # [slots, 2 * up_off] (gate | up, bias from chunk 0), SwiGLU runs after (swiglu()); not gated:
    # rows tok // C_DIV of c (C_DIV = top_k fuses the combine), routing weight applied per chunk.
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_pid_m = tl.cdiv(tl.load(npp_ptr), BM)
    num_pid_n = tl.cdiv(N, BN)
    if pid >= num_pid_m * num_pid_n:
        return
    num_in_group = GROUP_M * num_pid_n
    group_id = pid // num_in_group
    first_m = group_id * GROUP_M
    gsize = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % num_in_group) % gsize
    pid_n = (pid % num_in_group) // gsize

    offs_m = pid_m * BM + tl.arange(0, BM)
    tok = tl.load(sorted_ids_ptr + offs_m)
    tok_mask = tok < num_valid
    arow = tok // A_DIV
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_mask = offs_n < N
    offs_n_safe = tl.where(n_mask, offs_n, 0)
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    c_ptrs = c_ptr + tok.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
    c_mask = tok_mask[:, None] & n_mask[None, :]
    if GU_PAIRED:
        # gemm1 over paired gate|up rows (quant.pair_gate_up_rows: blocks of BN/2 gate rows, then the same
        # BN/2 up rows): N counts the paired rows, up_off is the output width (the intermediate size);
        # this program writes output columns pid_n * BN/2 + [0, BN/2)
        tl.static_assert(not GATED and SPLIT_K == 1)
        offs_o = pid_n * (BN // 2) + tl.arange(0, BN // 2)
        c_ptrs = c_ptr + tok.to(tl.int64)[:, None] * stride_cm + offs_o[None, :]
        c_mask = tok_mask[:, None] & (offs_o < up_off)[None, :]
    if expert < 0:
        if SPLIT_K == 1:
            if GU_PAIRED:
                tl.store(c_ptrs, tl.zeros((BM, BN // 2), dtype=c_ptr.dtype.element_ty), mask=c_mask)
            else:
                tl.store(c_ptrs, tl.zeros((BM, BN), dtype=c_ptr.dtype.element_ty), mask=c_mask)
        return
    if SPLIT_K > 1:
        kch = tl.cdiv(tl.cdiv(K, BK), SPLIT_K) * BK
        k_lo = pid_k * kch
        k_hi = tl.minimum(K, k_lo + kch)
    else:
        k_lo = 0
        k_hi = K

    a_row_ptr = a_ptr + arow.to(tl.int64)[:, None] * stride_am
    w_e = w_ptr + expert * stride_we
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    acc_up = tl.zeros((BM, BN), dtype=tl.float32)

    # mxfp4 x bf16 always takes the MXV >= 1 loop (the launcher sets MXV >= 1 for it)
    tl.static_assert(WF != WF_MX_BF16 or MXV >= 1)
    if WF == WF_MX_BF16:
        # ---------------- MXFP4 x bf16, v2 (MXV=1) / v3 (MXV=2: swapped A/B): one K tile of BK elements (BK/32 MX groups) per step.
        # The E8M0 scale is folded into the bf16 exponent while unpacking (no accumulator rescale),
        # so a K tile is two tensor-core dots: plane 0 (elements 0..15 of each group) and plane 1
        # (16..31), each [BN, BK/2], against the matching A columns ("lanes" pack, models/quant.py).
        G: tl.constexpr = BK // 32
        gg = tl.arange(0, G)
        jj = tl.arange(0, 16)
        # "lanes" pack (models/quant.py): the asm unpacks whole 32-bit words, so the weight tile is
        # loaded contiguously (16-byte loads); the integer path (interpreter) reads, for plane
        # element j, the two bytes of the 16-bit lane that holds it (elements j and j + 16 share it)
        if UNPACK_ASM:
            jpos = jj
        else:
            jpos = (jj & ~3) | ((jj & 1) << 1)
        qq = tl.arange(0, BK // 2)
        a_lo_cols = tl.max_contiguous(tl.multiple_of((qq // 16) * 32 + (qq % 16), 16), 16)
        if MXV == 2 and UNPACK_ASM:
            # the register-A unpack puts slots A, B of a lane at plane positions k, k+1 (see
            # _e2m1_lanes_bf16_asm_rega): gather the activation columns the same way instead of
            # permuting the weight bytes (which would turn the 16-byte weight loads into byte loads)
            q16 = qq % 16
            a_lo_cols = (qq // 16) * 32 + ((q16 & ~3) | ((q16 & 1) << 1) | ((q16 & 2) >> 1))
        ws_e = w_s_ptr + expert * stride_wse
        # MXV=2 computes out^T [BN, BM] = W [BN, BK] @ X^T [BK, BM]: the unpacked weight tile is the
        # MMA's A operand (64-row wgmma over weight rows, tokens as the MMA's N), so it can feed the
        # tensor cores from registers; X^T is loaded directly in [BK/2, BM] form.
        acc_t = tl.zeros((BN, BM), dtype=tl.float32)
        acc_ut = tl.zeros((BN, BM), dtype=tl.float32)
        a_t_ptr = a_ptr + arow.to(tl.int64)[None, :] * stride_am
        kt_lo = k_lo // BK
        kt_hi = tl.cdiv(k_hi, BK)
        if KPAIR:
            # two K tiles per step (swapped A/B only), every load of both issued before the first
            # unpack: the weight tiles feed the inline-asm unpack in registers, which Triton's software
            # pipeline does not stage, so this doubles the bytes in flight per program without
            # loop-carried register tiles (those went through shared memory)
            tl.static_assert(MXV == 2)
            for kt in range(kt_lo, kt_hi, 2):
                kt1 = tl.minimum(kt + 1, kt_hi - 1)
                wb_g0, wb1_g0, sc_g0 = _mx_load(w_e, ws_e, offs_n_safe, kt, K, stride_wn, stride_wsn,
                                                gg, jpos, G, UNPACK_ASM, EVEN_K, WTILE, STILE)
                wb_g1, wb1_g1, sc_g1 = _mx_load(w_e, ws_e, offs_n_safe, kt1, K, stride_wn, stride_wsn,
                                                gg, jpos, G, UNPACK_ASM, EVEN_K, WTILE, STILE)
                if GATED:
                    wb_u0, wb1_u0, sc_u0 = _mx_load(w_e, ws_e, offs_n_safe + up_off, kt, K, stride_wn, stride_wsn,
                                                    gg, jpos, G, UNPACK_ASM, EVEN_K, WTILE, STILE)
                    wb_u1, wb1_u1, sc_u1 = _mx_load(w_e, ws_e, offs_n_safe + up_off, kt1, K, stride_wn, stride_wsn,
                                                    gg, jpos, G, UNPACK_ASM, EVEN_K, WTILE, STILE)
                # the second tile's activations are zero when it lies past the chunk (odd tile count)
                a_lo0, a_hi0 = _mx_a_t_load(a_t_ptr, kt * BK, a_lo_cols, tok_mask, K)
                a_lo1, a_hi1 = _mx_a_t_load(a_t_ptr, (kt + 1) * BK, a_lo_cols, tok_mask,
                                            tl.where(kt + 1 < kt_hi, K, 0))
                acc_t = _mx_dot_t(acc_t, wb_g0, wb1_g0, sc_g0, a_lo0, a_hi0, jj, BN, BK, G, UNPACK_ASM, BIG_SCALE, DOT_F32)
                if GATED:
                    acc_ut = _mx_dot_t(acc_ut, wb_u0, wb1_u0, sc_u0, a_lo0, a_hi0, jj, BN, BK, G, UNPACK_ASM, BIG_SCALE, DOT_F32)
                acc_t = _mx_dot_t(acc_t, wb_g1, wb1_g1, sc_g1, a_lo1, a_hi1, jj, BN, BK, G, UNPACK_ASM, BIG_SCALE, DOT_F32)
                if GATED:
                    acc_ut = _mx_dot_t(acc_ut, wb_u1, wb1_u1, sc_u1, a_lo1, a_hi1, jj, BN, BK, G, UNPACK_ASM, BIG_SCALE, DOT_F32)
        else:
            for kt in range(kt_lo, kt_hi):
                # loop over K tiles (k0 = kt * BK) so that the scale offset kt * G is a known multiple of G:
                # with scale rows padded to 16 bytes the G scale bytes of a tile are one aligned vector
                k0 = kt * BK
                if MXV == 2:
                    if EVEN_K:
                        a_lo_t = tl.load(a_t_ptr + (k0 + a_lo_cols)[:, None], mask=tok_mask[None, :], other=0.0)
                        a_hi_t = tl.load(a_t_ptr + (k0 + 16 + a_lo_cols)[:, None], mask=tok_mask[None, :], other=0.0)
                    else:
                        akm = (k0 + a_lo_cols) < K
                        a_lo_t = tl.load(a_t_ptr + (k0 + a_lo_cols)[:, None], mask=tok_mask[None, :] & akm[:, None], other=0.0)
                        a_hi_t = tl.load(a_t_ptr + (k0 + 16 + a_lo_cols)[:, None], mask=tok_mask[None, :] & akm[:, None], other=0.0)
                elif EVEN_K:
                    a_lo = tl.load(a_row_ptr + (k0 + a_lo_cols)[None, :], mask=tok_mask[:, None], other=0.0)
                    a_hi = tl.load(a_row_ptr + (k0 + 16 + a_lo_cols)[None, :], mask=tok_mask[:, None], other=0.0)
                else:
                    akm = (k0 + a_lo_cols) < K
                    a_lo = tl.load(a_row_ptr + (k0 + a_lo_cols)[None, :], mask=tok_mask[:, None] & akm[None, :], other=0.0)
                    a_hi = tl.load(a_row_ptr + (k0 + 16 + a_lo_cols)[None, :], mask=tok_mask[:, None] & akm[None, :], other=0.0)
                for half in tl.static_range(2 if GATED else 1):
                    wb, wb1, sc = _mx_load(w_e, ws_e, offs_n_safe + half * up_off, kt, K, stride_wn, stride_wsn,
                                           gg, jpos, G, UNPACK_ASM, EVEN_K, WTILE, STILE)
                    w_lo, w_hi = _mx_unpack(wb, wb1, sc, jj, BN, BK, G, UNPACK_ASM, BIG_SCALE, MXV)
                    if MXV == 2:
                        if half == 0:
                            acc_t = _dot(w_lo, a_lo_t, acc_t, DOT_F32)
                            acc_t = _dot(w_hi, a_hi_t, acc_t, DOT_F32)
                        else:
                            acc_ut = _dot(w_lo, a_lo_t, acc_ut, DOT_F32)
                            acc_ut = _dot(w_hi, a_hi_t, acc_ut, DOT_F32)
                    elif half == 0:
                        acc = _dot(a_lo, tl.trans(w_lo), acc, DOT_F32)
                        acc = _dot(a_hi, tl.trans(w_hi), acc, DOT_F32)
                    else:
                        acc_up = _dot(a_lo, tl.trans(w_lo), acc_up, DOT_F32)
                        acc_up = _dot(a_hi, tl.trans(w_hi), acc_up, DOT_F32)
        if MXV == 2:
            acc = tl.trans(acc_t)
            if GATED:
                acc_up = tl.trans(acc_ut)
    elif WF == WF_MX_FP8:
        # ---------------- MXFP4 x fp8 (mxfp4-w4a8, "nibbles" pack) v1: one 32-element K group
        # (16 bytes / row) per step, one K=32 dot, per-group accumulator rescale.
        j = tl.arange(0, 16)
        jperm = (j & ~3) | ((j & 1) << 1) | ((j & 2) >> 1)      # byte position <-> plane index
        # the lo and hi nibble planes are joined along a new last axis (element 2j+h = plane h,
        # row j) and A is loaded in the same order
        kk = tl.arange(0, 32)
        kj = kk // 2
        kh = kk % 2
        if UNPACK_ASM:
            a_cols = kh * 16 + ((kj & ~3) | ((kj & 1) << 1) | ((kj & 2) >> 1))
        else:
            a_cols = kh * 16 + kj
        ws_e = w_s_ptr + expert * stride_wse
        for g0 in range(0, K // 32, GPI):
          for gi in tl.static_range(GPI):
            g = g0 + gi
            a = tl.load(a_row_ptr + (g * 32 + a_cols)[None, :], mask=tok_mask[:, None], other=0.0)
            for half in tl.static_range(2 if GATED else 1):
                nrow = offs_n_safe + half * up_off
                if not UNPACK_ASM:
                    wb = tl.load(w_e + nrow[:, None] * stride_wn + (g * 16 + jperm)[None, :]).to(tl.int32)
                else:
                    wb = tl.load(w_e + nrow[:, None] * stride_wn + (g * 16 + j)[None, :])
                sc = tl.load(ws_e + nrow * stride_wsn + g).to(tl.int32)  # E8M0
                if UNPACK_ASM:
                    w_lo, w_hi = _e2m1x4_to_fp8_asm(wb)
                else:
                    w_lo = _e2m1_nibble_to_fp8_bits(wb & 15).to(tl.uint8).to(tl.float8e4nv, bitcast=True)
                    w_hi = _e2m1_nibble_to_fp8_bits(wb >> 4).to(tl.uint8).to(tl.float8e4nv, bitcast=True)
                fs = tl.exp2((sc - 121).to(tl.float32))  # 2^(s-127) * 2^6
                w = tl.reshape(tl.join(w_lo, w_hi), (BN, 32))
                part = _dot(a, tl.trans(w), tl.zeros((BM, BN), tl.float32), DOT_F32)
                if half == 0:
                    acc += part * fs[None, :]
                else:
                    acc_up += part * fs[None, :]
    elif SWAP_AB:
        # ---------------- BF16 / FP8 weights, swapped A/B: out^T [BN, BM] = W [BN, BK] @ X^T [BK, BM].
        # The weight tile is the MMA's M side (>= 64 rows: a warpgroup MMA, e4m3 operands stay e4m3;
        # with few token rows as the M side Triton falls back to mma.sync, which takes e4m3 only as
        # FP16 after a conversion) and the few tokens are its N side. Both operands are K-major.
        tl.static_assert(WF == WF_BF16 or WF == WF_FP8)
        offs_k = tl.arange(0, BK)
        wt_ptrs = w_e + offs_n_safe[:, None] * stride_wn + (k_lo + offs_k)[None, :]
        wut_ptrs = wt_ptrs + up_off * stride_wn
        at_ptrs = a_ptr + arow.to(tl.int64)[None, :] * stride_am + (k_lo + offs_k)[:, None]
        acc_t = tl.zeros((BN, BM), dtype=tl.float32)
        acc_ut = tl.zeros((BN, BM), dtype=tl.float32)
        for k0 in range(k_lo, k_hi, BK):
            if EVEN_K:
                a_t = tl.load(at_ptrs, mask=tok_mask[None, :], other=0.0)
                w = tl.load(wt_ptrs)
            else:
                kmask = (k0 + offs_k) < K
                a_t = tl.load(at_ptrs, mask=tok_mask[None, :] & kmask[:, None], other=0.0)
                w = tl.load(wt_ptrs, mask=kmask[None, :], other=0.0)
            acc_t = _dot(w, a_t, acc_t, DOT_F32)
            if GATED:
                if EVEN_K:
                    wu = tl.load(wut_ptrs)
                else:
                    wu = tl.load(wut_ptrs, mask=kmask[None, :], other=0.0)
                acc_ut = _dot(wu, a_t, acc_ut, DOT_F32)
                wut_ptrs += BK
            at_ptrs += BK
            wt_ptrs += BK
        acc = tl.trans(acc_t)
        if GATED:
            acc_up = tl.trans(acc_ut)
    elif GATED and GU_ONE_DOT:
        # ---------------- BF16 / FP8 weights, gate and up in one dot: the weight tile [BK, 2 * BN] takes
        # gate row n at column 2j and up row n at column 2j + 1 (n = the tile's j-th row), so one
        # 2*BN-wide MMA reads each activation slice once and the gate and up sums of a row end up next
        # to each other in the accumulator; they are split apart after the loop.
        tl.static_assert(WF == WF_BF16 or WF == WF_FP8)
        offs_k = tl.arange(0, BK)
        jj2 = tl.arange(0, 2 * BN)
        wrow = pid_n * BN + jj2 // 2
        wrow = tl.where(wrow < N, wrow, 0) + (jj2 % 2) * up_off
        w2_ptrs = w_e + wrow.to(tl.int64)[None, :] * stride_wn + (k_lo + offs_k)[:, None]
        a_ptrs = a_row_ptr + (k_lo + offs_k)[None, :]
        acc2 = tl.zeros((BM, 2 * BN), dtype=tl.float32)
        for k0 in range(k_lo, k_hi, BK):
            if EVEN_K:
                a = tl.load(a_ptrs, mask=tok_mask[:, None], other=0.0)
                w2 = tl.load(w2_ptrs)
            else:
                kmask = (k0 + offs_k) < K
                a = tl.load(a_ptrs, mask=tok_mask[:, None] & kmask[None, :], other=0.0)
                w2 = tl.load(w2_ptrs, mask=kmask[:, None], other=0.0)
            acc2 = _dot(a, w2, acc2, DOT_F32)
            a_ptrs += BK
            w2_ptrs += BK
        acc, acc_up = tl.split(tl.reshape(acc2, (BM, BN, 2)))
    else:
        # ---------------- BF16 / FP8 weights
        offs_k = tl.arange(0, BK)
        w_ptrs = w_e + offs_n_safe[None, :] * stride_wn + (k_lo + offs_k)[:, None]
        wu_ptrs = w_ptrs + up_off * stride_wn
        a_ptrs = a_row_ptr + (k_lo + offs_k)[None, :]
        if WF == WF_FP8B:
            nblk = offs_n_safe // 128
            ws_row = w_s_ptr + expert * stride_wse + nblk * stride_wsn
            wsu_row = w_s_ptr + expert * stride_wse + (nblk + up_soff) * stride_wsn
            as_row = a_s_ptr + arow.to(tl.int64) * stride_asm
        for k0 in range(k_lo, k_hi, BK):
            if EVEN_K:
                a = tl.load(a_ptrs, mask=tok_mask[:, None], other=0.0)
                w = tl.load(w_ptrs)
            else:
                kmask = (k0 + offs_k) < K
                a = tl.load(a_ptrs, mask=tok_mask[:, None] & kmask[None, :], other=0.0)
                w = tl.load(w_ptrs, mask=kmask[:, None], other=0.0)
            if WF == WF_FP8B:
                kb = k0 // 128
                a_s = tl.load(as_row + kb, mask=tok_mask, other=0.0)
                w_s = tl.load(ws_row + kb)
                acc += _dot(a, w, tl.zeros((BM, BN), tl.float32), DOT_F32) * a_s[:, None] * w_s[None, :]
            else:
                acc = _dot(a, w, acc, DOT_F32)
            if GATED:
                if EVEN_K:
                    wu = tl.load(wu_ptrs)
                else:
                    wu = tl.load(wu_ptrs, mask=kmask[:, None], other=0.0)
                if WF == WF_FP8B:
                    wu_s = tl.load(wsu_row + kb)
                    acc_up += _dot(a, wu, tl.zeros((BM, BN), tl.float32), DOT_F32) * a_s[:, None] * wu_s[None, :]
                else:
                    acc_up = _dot(a, wu, acc_up, DOT_F32)
                wu_ptrs += BK
            a_ptrs += BK
            w_ptrs += BK

    # ---------------- epilogue: scales, bias, SwiGLU, routing weight
    if AQ == AQ_ROW:  # per-row activation scale
        a_s = tl.load(a_s_ptr + arow.to(tl.int64) * stride_asm, mask=tok_mask, other=0.0)
        acc = acc * a_s[:, None]
        if GATED:
            acc_up = acc_up * a_s[:, None]
    if WF == WF_FP8:
        ws_e = w_s_ptr + expert * stride_wse
        acc = acc * tl.load(ws_e + offs_n_safe * stride_wsn)[None, :]
        if GATED:
            acc_up = acc_up * tl.load(ws_e + (offs_n_safe + up_off) * stride_wsn)[None, :]
    if HAS_BIAS:
        b_e = b_ptr + expert * stride_be
        bsc = 1.0
        if SPLIT_K > 1:
            bsc = (pid_k == 0).to(tl.float32)  # bias once, from the first K chunk
        acc += tl.load(b_e + offs_n_safe).to(tl.float32)[None, :] * bsc
        if GATED:
            acc_up += tl.load(b_e + offs_n_safe + up_off).to(tl.float32)[None, :] * bsc
    if SPLIT_K > 1:
        if GATED:
            tl.atomic_add(c_ptrs, acc, mask=c_mask, sem="relaxed")
            tl.atomic_add(c_ptrs + up_off, acc_up, mask=c_mask, sem="relaxed")
        else:
            if MUL_ROUTED:
                rw = tl.load(topk_w_ptr + tok, mask=tok_mask, other=0.0)
                acc = acc * rw[:, None]
            crow = (tok // C_DIV).to(tl.int64)
            tl.atomic_add(c_ptr + crow[:, None] * stride_cm + offs_n[None, :], acc, mask=c_mask, sem="relaxed")
        return
    if GATED:
        acc = _swiglu_gptoss(acc, acc_up)
    if GU_PAIRED:
        # the tile's first BN/2 columns are gate rows, the last BN/2 the matching up rows: split the one
        # accumulator into the two halves (column bit log2(BN/2)) and apply SwiGLU
        gate, up = tl.split(tl.permute(tl.reshape(acc, (BM, 2, BN // 2)), (0, 2, 1)))
        acc = _swiglu_gptoss(gate, up)
    if MUL_ROUTED:
        rw = tl.load(topk_w_ptr + tok, mask=tok_mask, other=0.0)
        acc = acc * rw[:, None]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)


# ----------------------------------------------------------------------------- activation quant
@triton.jit
def act_quant_kernel(x_ptr, q_ptr, s_ptr, K, stride_xm, stride_qm, stride_sm,
                     NG: tl.constexpr, PER_GROUP: tl.constexpr, OUT_BF16: tl.constexpr = False):
    """Dynamic fp8 quantization of one row: per row (scale [R]) or per 128 channels ([R, ceil(K/128)]);
    OUT_BF16: the e4m3 values stored as bf16 (exact)."""
    row = tl.program_id(0).to(tl.int64)
    g = tl.arange(0, NG)
    c = tl.arange(0, 128)
    offs = g[:, None] * 128 + c[None, :]
    mask = offs < K
    x = tl.load(x_ptr + row * stride_xm + offs, mask=mask, other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(x), axis=1)  # [NG]
    if PER_GROUP:
        s = tl.maximum(amax, 1e-12) / _FP8_MAX
        q = x / s[:, None]
        tl.store(s_ptr + row * stride_sm + g, s, mask=g * 128 < K)
    else:
        s = tl.maximum(tl.max(amax, axis=0), 1e-12) / _FP8_MAX
        q = x / s
        tl.store(s_ptr + row * stride_sm, s)
    q = tl.minimum(tl.maximum(q, -_FP8_MAX), _FP8_MAX).to(tl.float8e4nv)
    if OUT_BF16:
        q = q.to(tl.bfloat16)
    tl.store(q_ptr + row * stride_qm + offs, q, mask=mask)


def act_quant(x: torch.Tensor, per_group: bool, force_kernel: bool = False,
              as_bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """fp8 e4m3 dynamic activation quantization (per row, or per row per 128 channels).
    as_bf16: the e4m3 values written as bf16 (exact), for GEMM kernels that read bf16 activations, so
    that no conversion runs between the quantizer and them.

    Under TRITON_INTERPRET=1 the torch quantizer is used unless force_kernel: the interpreter's
    fp32->e4m3 conversion does not round to nearest (seen with triton 3.9: 5.7% vs 2.6% error),
    which would blur the layer's error bound; the kernel itself is checked on the GPU."""
    if INTERPRET and not force_kernel:
        q, s = quant.quant_fp8_groups(x) if per_group else quant.quant_fp8_rowwise(x)
        return (q.to(torch.bfloat16) if as_bf16 else q), s
    r, k = x.shape
    ng = triton.cdiv(k, 128)
    q = torch.empty((r, k), device=x.device, dtype=torch.bfloat16 if as_bf16 else torch.float8_e4m3fn)
    s = torch.empty((r, ng) if per_group else (r,), device=x.device, dtype=torch.float32)
    if r:
        act_quant_kernel[(r,)](x, q, s, k, x.stride(0), q.stride(0), s.stride(0) if s.dim() else 1,
                               NG=triton.next_power_of_2(ng), PER_GROUP=per_group, OUT_BF16=as_bf16, num_warps=4)
    return q, s


# ----------------------------------------------------------------------------- sort (moe_align)
# One-program sort kernel up to this many token slots: one launch beats the torch version's ~40 small
# kernels while the slots are few; one program's serial scan loses to torch on very many slots.
ALIGN_KERNEL_MAX_SLOTS = 8192


@triton.jit
def moe_align_kernel(ids_ptr, sorted_ptr, eid_ptr, npp_ptr, counts_ptr, scratch_ptr,
                     nv, E, expert_offset, cap, nblocks,
                     BM: tl.constexpr, NB: tl.constexpr, CH: tl.constexpr, CB: tl.constexpr):
    """The whole sort in one program (one launch): histogram of the bucket per slot (local expert, or
    E = foreign), padded starts by a scan, expert id per BM block, then each slot's destination from
    an atomic per-bucket counter. Order inside an expert's rows follows the atomics (not stable);
    every row is computed independently, so results do not depend on it. scratch: int32 [2 * NB]."""
    b_idx = tl.arange(0, NB)
    tl.store(scratch_ptr + b_idx, tl.zeros([NB], tl.int32))
    # pad value everywhere first; real slots overwrite below (after a CTA barrier)
    for c0 in range(0, cap, CH):
        offs = c0 + tl.arange(0, CH)
        tl.store(sorted_ptr + offs, tl.full([CH], 0, tl.int32) + nv, mask=offs < cap)
    cnt = tl.zeros([NB], tl.int32)
    for c0 in range(0, nv, CH):
        offs = c0 + tl.arange(0, CH)
        m = offs < nv
        g = tl.load(ids_ptr + offs, mask=m, other=0).to(tl.int32) - expert_offset
        bk = tl.where((g >= 0) & (g < E), g, E)
        bk = tl.where(m, bk, NB - 1)  # NB >= E + 2: the last bin collects the masked lanes
        cnt += tl.histogram(bk, NB)
    cnt = tl.where(b_idx <= E, cnt, 0)
    padded = (cnt + BM - 1) // BM * BM
    ends = tl.cumsum(padded, 0)
    starts = ends - padded
    tl.store(scratch_ptr + NB + b_idx, starts)
    tl.store(counts_ptr + b_idx, cnt, mask=b_idx < E)
    total = tl.sum(padded, 0)
    tl.store(npp_ptr, total)
    ends_v = tl.where(b_idx <= E, ends, total + 1)
    for c0 in range(0, nblocks, CB):
        blk = c0 + tl.arange(0, CB)
        e = tl.sum((ends_v[None, :] <= (blk * BM)[:, None]).to(tl.int32), 1)
        e = tl.where(e >= E, -1, e)
        tl.store(eid_ptr + blk, e, mask=blk < nblocks)
    tl.debug_barrier()
    for c0 in range(0, nv, CH):
        offs = c0 + tl.arange(0, CH)
        m = offs < nv
        g = tl.load(ids_ptr + offs, mask=m, other=0).to(tl.int32) - expert_offset
        bk = tl.where((g >= 0) & (g < E), g, E)
        rank = tl.atomic_add(scratch_ptr + bk, 1, mask=m)
        dest = tl.load(scratch_ptr + NB + bk, mask=m, other=0) + rank
        tl.store(sorted_ptr + dest, offs, mask=m)


def moe_align(topk_ids: torch.Tensor, num_experts: int, block_m: int, expert_offset: int = 0):
    """Sort token slots by expert and pad each expert's rows to block_m; graph-capturable (no host sync).

    topk_ids [T, k] (global expert ids); experts [expert_offset, expert_offset + num_experts) are local,
    the rest go to one "foreign" bucket whose blocks have expert id -1 (EP: written as zeros).
    Returns sorted_ids [cap] int32 (pad value T*k), expert_ids [cap/block_m] int32, npp [1] int32
    (rows after padding) and counts [num_experts] int32 (tokens per local expert).
    On CUDA (and under TRITON_INTERPRET) this is one Triton launch plus the output allocations;
    moe_align_torch is the torch version (about 40 small kernels).
    """
    if not (topk_ids.is_cuda or INTERPRET) or topk_ids.numel() > ALIGN_KERNEL_MAX_SLOTS:
        return moe_align_torch(topk_ids, num_experts, block_m, expert_offset)
    dev = topk_ids.device
    flat = topk_ids.reshape(-1)
    if flat.dtype not in (torch.int32, torch.int64) or not flat.is_contiguous():
        flat = flat.to(torch.int32).contiguous()
    nv = flat.numel()
    nb = num_experts + 1
    cap = nv + min(nb, nv) * (block_m - 1)
    cap = (cap + block_m - 1) // block_m * block_m
    nblocks = cap // block_m
    NB = triton.next_power_of_2(num_experts + 2)
    sorted_ids = torch.empty((cap,), dtype=torch.int32, device=dev)
    eid = torch.empty((nblocks,), dtype=torch.int32, device=dev)
    npp = torch.empty((1,), dtype=torch.int32, device=dev)
    counts = torch.empty((num_experts,), dtype=torch.int32, device=dev)
    scratch = torch.empty((2 * NB,), dtype=torch.int32, device=dev)
    moe_align_kernel[(1,)](flat, sorted_ids, eid, npp, counts, scratch, nv, num_experts, expert_offset,
                           cap, nblocks, BM=block_m, NB=NB, CH=1024 if nv > 256 else 256, CB=32,
                           num_warps=8 if nv > 2048 else 4)
    return sorted_ids, eid, npp, counts


def moe_align_torch(topk_ids: torch.Tensor, num_experts: int, block_m: int, expert_offset: int = 0):
    """moe_align in torch ops (stable order inside each expert); the reference for the kernel."""
    dev = topk_ids.device
    flat = topk_ids.reshape(-1).to(torch.int64)
    nv = flat.numel()
    local = flat - expert_offset
    is_local = (local >= 0) & (local < num_experts)
    bucket = torch.where(is_local, local, torch.full_like(local, num_experts))  # E = foreign
    nb = num_experts + 1
    counts = torch.zeros(nb, dtype=torch.int64, device=dev)
    counts.scatter_add_(0, bucket, torch.ones_like(bucket))
    padded = (counts + block_m - 1) // block_m * block_m
    ends = torch.cumsum(padded, 0)
    starts = ends - padded
    order = torch.argsort(bucket, stable=True)
    sorted_bucket = bucket[order]
    cstarts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(nv, device=dev) - cstarts[sorted_bucket]
    dest = starts[sorted_bucket] + rank
    cap = nv + min(nb, nv) * (block_m - 1)
    cap = (cap + block_m - 1) // block_m * block_m
    sorted_ids = torch.full((cap,), nv, dtype=torch.int32, device=dev)
    sorted_ids.scatter_(0, dest, order.to(torch.int32))
    nblocks = cap // block_m
    block_start = torch.arange(nblocks, device=dev) * block_m
    eid = torch.searchsorted(ends, block_start, right=True)
    eid = torch.where(eid >= num_experts, torch.full_like(eid, -1), eid).to(torch.int32)
    npp = ends[-1:].to(torch.int32)
    return sorted_ids, eid, npp, counts[:num_experts].to(torch.int32)


# ----------------------------------------------------------------------------- configs
# Defaults by regime: rows per expert small (decode: weight streaming) vs large (prefill).
# Split-K for decode: when the (expert, N-tile) programs are too few to keep every SM streaming, split
# K so that about SPLIT_CTAS_PER_SM programs per SM run (each chunk >= SPLIT_MIN_STEPS K tiles, so that
# the fp32 atomics and the zeroed partial-sum buffer stay small against the weight bytes).
SPLIT_CTAS_PER_SM = 4
SPLIT_MAX = 8
SPLIT_MIN_STEPS = 3
# The card the kernels are tuned for, when no CUDA device can be asked (CPU, interpreter).
FALLBACK_GPU = "h200"


@functools.lru_cache(maxsize=None)
def sm_count(device_index: int | None = None) -> int:
    """Streaming multiprocessors of the CUDA device (the current one by default); without a CUDA
    device, the GPU table's count for FALLBACK_GPU."""
    if torch.cuda.is_available():
        idx = torch.cuda.current_device() if device_index is None else device_index
        return int(torch.cuda.get_device_properties(idx).multi_processor_count)
    from moeprof.roofline.gpus import get_gpu

    return get_gpu(FALLBACK_GPU).sm_count


def split_k_for(cfg: dict, n: int, k: int, experts: int | None, slots: int | None,
                target: int | None = None) -> int:
    """K chunks for one GEMM so that about `target` programs (default SPLIT_CTAS_PER_SM per SM) run."""
    if experts is None or slots is None or experts <= 0:
        return 1
    if target is None:
        target = SPLIT_CTAS_PER_SM * sm_count()
    m_blocks = experts + max(0, slots - experts) // cfg["BM"]   # lower bound on BM blocks in use
    tiles = m_blocks * -(-n // cfg["BN"])
    steps = -(-k // cfg["BK"])
    s = 1
    while s < SPLIT_MAX and tiles * s < target and steps // (2 * s) >= SPLIT_MIN_STEPS:
        s *= 2
    return s


# mxfp4 decode: the CUDA kernel (kernels/mx_mma.cu, mx_cuda.py) up to this many rows per expert on
# average (above it the Triton kernel was faster on the H200: docs/performance.md); token groups of 8 per
# pass by rows per expert (a pass streams the expert's weights once). CTA shapes: with few experts
# touched, two warps split K (more warps streaming); otherwise eight warps of two 16-row tiles each.
MMA_MAX_ROWS_PER_EXPERT = 8
# prefill: from this many rows per expert (fp8) / above it (bf16), gemm1 runs over its gate|up rows
# paired in blocks of 128 (GU_PAIRED) as one 256-wide tile with one accumulator and SwiGLU in its
# epilogue (docs/performance.md, runs 42 and 47)
FP8_GU_PAIRED_MIN_ROWS_PER_EXPERT = 128
BF16_GU_PAIRED_MIN_ROWS_PER_EXPERT = 256
# mxfp4-w4a8 at decode: the W4A8 kernel (KERNEL="mma8": e4m3 activations read as they are, weights
# placed into e4m3 bits, mx_mma.cu mx_w4a8_body; on sm_90 ptxas runs its e4m3 mma.sync as f16 MMAs) up to
# W4A8_MMA8_MAX_ROWS_PER_EXPERT, then (KERNEL="mma") the W4A16 kernel on the e4m3 values as bf16 (exact;
# the row quantizer writes them so) with their row scales applied in the epilogue, which measured faster with two token
# groups per pass (docs/performance.md, run 39); above W4A8_MMA_MAX_ROWS_PER_EXPERT the prefill kernel
# (below), or without it the decode kernel up to W4A8_MMA_MAX_ROWS_WITHOUT_WG, then the fp8 GEMM on
# dequantized weights
W4A8_MMA_MAX_ROWS_PER_EXPERT = 4
W4A8_MMA_MAX_ROWS_WITHOUT_WG = 32
W4A8_MMA8_MAX_ROWS_PER_EXPERT = 2.0
# mxfp4-w4a8 above W4A8_MMA_MAX_ROWS_PER_EXPERT up to this many rows per expert: a prefill kernel, above
# it the fp8 GEMM on weights dequantized to e4m3. W4A8_WG_KERNEL "wg8": FP8 MMAs (the mx_wg8 kernels:
# the e4m3 activations as they are, weights placed into e4m3 in the MMA's registers, one k32 MMA per MX
# group); "wg": the mxfp4 prefill kernel on the activations converted to bf16 (exact; row scales in its
# epilogue), which the layer also takes where the weights' scales do not fit the e4m3 kernel
# (quant.WG8_SCALE_SPREAD). docs/performance.md, run 57: "wg" 1148 vs 1635 us for the decode kernel at 32
# rows per expert, 2417 vs 4301 us for the dequantize path at 128, 8620 vs 6546 at 512; run 67: "wg8" 6348
# vs 6540 for the dequantize path at 512 (measured up to there: the dequantization is paid once per call,
# so above some batch that path is faster again).
W4A8_WG_MAX_ROWS_PER_EXPERT = 512
W4A8_WG_KERNEL = "wg8"
# the e4m3 kernels' table form (cfg LUT=1: each MX group's scale rides in the e4m3 operand, no rescaling of
# the sums; the layer drops to LUT=0 where a weight row's scales spread beyond quant.WG8_LUT_SCALE_SPREAD)
W4A8_WG8_LUT = 1
W4A8_MMA_KERNEL = "mma8"
# the W4A8 kernel's build (cfg F16MMA): 1 = each MMA step as the two f16 MMAs that ptxas makes of the e4m3
# one on sm_90, accumulating onto each other (fewer instructions per step at every G: no add of the zero
# accumulator); 0 = the e4m3 mma.sync instruction as written
W4A8_MMA_F16 = 1
MMA_GROUPS = ((2.0, 1), (float("inf"), 2))
# option bits (mx_cuda.Variant.FL) with two token groups per pass: all four loop options, measured
# faster there and not with one group (docs/performance.md, runs 35-36)
MMA_FLAGS_G2 = 15
MMA_FEW_EXPERTS = 8
MMA_SHAPE_FEW = dict(WN=2, WK=2, D=8, MT=1)
# the down GEMM has half the output rows of gemm1: with few experts it needs more warps per row tile
# to keep every SM streaming (K split over 4 warps with up to 8 experts, one tile per warp up to 16;
# docs/performance.md, run 38)
MMA_SHAPE_FEW_DOWN = dict(WN=2, WK=4, D=4, MT=1)
MMA_DOWN_ONE_TILE_EXPERTS = 16
# the decode default: the kernel's default build (what mx_cuda.available() compiles)
MMA_SHAPE = {k: v for k, v in dataclasses.asdict(mx_cuda.Variant()).items() if k != "ASMEM"}


# mxfp4 above MMA_MAX_ROWS_PER_EXPERT: the warpgroup-MMA kernel (kernels/mx_wgmma.cu: weights unpacked
# into the MMA's register operand once per token tile, no bf16 copy of the weights) when both GEMMs' K
# are multiples of 64 (it measured faster than the Triton kernel at 16 and 32 rows per expert and than
# dequantize + bf16 GEMM from 128: docs/performance.md, runs 49-54); its CTA shape (mx_cuda.WgVariant),
# up to WG_FEW_ROWS_PER_EXPERT rows per expert with narrow token tiles and deeper staging
WG_MIN_ROWS_PER_EXPERT = MMA_MAX_ROWS_PER_EXPERT
WG_SHAPE = dict(NWG=2, BT=128, S=4, MINB=2)
WG_FEW_ROWS_PER_EXPERT = 16
WG_SHAPE_FEW = dict(NWG=2, BT=32, S=6, MINB=2)
# the e4m3 prefill kernels' CTA shapes by rows per expert (mxfp4-w4a8; docs/performance.md, runs 60-67:
# at 16 rows per expert narrow token tiles with deep staging, 634 against 938 us for the decode kernel; at
# 32 rows 64-row tiles, 884 against 1035 for 128-row ones; from 128 rows 128-row tiles with each chunk's
# MMAs left in flight into the next chunk and 5 stages, 1862 against 2009 us without at 128 rows)
W4A8_WG8_SHAPES = ((16, dict(NWG=2, BT=32, S=6, MINB=2)), (64, dict(NWG=2, BT=64, S=4, MINB=2)),
                   (float("inf"), dict(WG_SHAPE, S=5, IF=1)))


def wg_config(m_per_expert: float | None = None, kernel: str = "wg", **shape) -> dict:
    """Configuration of the prefill MXFP4 kernels: KERNEL "wg" (bf16 activations) or "wg8" (e4m3
    activations, FP8 MMAs: mxfp4-w4a8), BM = the sort's row padding (8), NWG warpgroups of 64 weight rows
    per CTA, up to BT token rows per pass, S stages, MINB CTAs per SM; the shape for m_per_expert rows per
    expert unless given."""
    if kernel not in ("wg", "wg8"):
        raise ValueError(f"unknown prefill MXFP4 kernel {kernel!r}")
    if kernel == "wg8" and m_per_expert is not None:
        base = next(sh for limit, sh in W4A8_WG8_SHAPES if m_per_expert <= limit)
    else:
        few = m_per_expert is not None and m_per_expert <= WG_FEW_ROWS_PER_EXPERT
        base = WG_SHAPE_FEW if few else WG_SHAPE
    return dict(KERNEL=kernel, BM=8, **{**base, **shape})


def mma_config(m_per_expert: float, experts: int | None = None, gated: bool = True, kernel: str = "mma",
               **shape) -> dict:
    """Configuration of the CUDA MXFP4 kernels: KERNEL "mma" (bf16 activations) or "mma8" (e4m3
    activations, mxfp4-w4a8), BM = the sort's row padding (8: one MMA n8 group), G token groups per
    pass, CTA shape WN x WK warps with MT tiles each and D ring stages (mx_cuda.Variant).
    experts: the experts with rows (None: many); gated: gemm1 (else the down GEMM)."""
    if kernel not in ("mma", "mma8"):
        raise ValueError(f"unknown CUDA MXFP4 kernel {kernel!r}")
    g = next(g for limit, g in MMA_GROUPS if m_per_expert <= limit)
    few = experts is not None and experts <= MMA_FEW_EXPERTS
    if gated:
        base = MMA_SHAPE_FEW if few else MMA_SHAPE
    elif few:
        base = MMA_SHAPE_FEW_DOWN
    elif experts is not None and experts <= MMA_DOWN_ONE_TILE_EXPERTS:
        base = dict(MMA_SHAPE, MT=1)
    else:
        base = MMA_SHAPE
    cfg = dict(KERNEL=kernel, BM=8, G=g, **{**base, **shape})
    if g == 2 and "FL" not in shape:
        cfg["FL"] = MMA_FLAGS_G2
    return cfg


def default_config(fmt: str, m_per_expert: float, n: int, k: int, gated: bool, slots: int | None = None,
                   experts: int | None = None, local_experts: int | None = None,
                   cuda_kernels: bool | None = None) -> dict:
    """Tile configuration for one GEMM (measured choices per regime: docs/performance.md).
    local_experts: the weight tensors' expert count (the CUDA kernel scans up to 256). cuda_kernels: whether
    the CUDA MXFP4 kernels (mx_cuda) can run; None: ask this machine's device (False without one), True: the
    configuration a Hopper GPU with both kernels would take (cuda_variants builds ahead of time with it)."""
    wf, _ = FMT_CODES[fmt]
    # (both GEMMs of a layer take the same path: the condition is symmetric in n and k)
    mma_rows = (MMA_MAX_ROWS_PER_EXPERT if wf == WF_MX_BF16 else
                W4A8_MMA_MAX_ROWS_PER_EXPERT if wf == WF_MX_FP8 else None)
    mma_ok = wg_ok = False
    if mma_rows is not None and min(n, k) >= 64 and (local_experts or 0) <= mx_cuda.MAX_EXPERTS:
        if cuda_kernels is None and not INTERPRET:
            mma_ok = mx_cuda.available()
            wg_ok = mma_ok and n % 64 == 0 and k % 64 == 0 and mx_cuda.wg_unavailable_reason() is None
        elif cuda_kernels:
            mma_ok, wg_ok = True, n % 64 == 0 and k % 64 == 0
        if wf == WF_MX_FP8 and mma_ok and not wg_ok:
            mma_rows = W4A8_MMA_MAX_ROWS_WITHOUT_WG   # no prefill kernel: the decode kernel a while longer
        if mma_ok and m_per_expert <= mma_rows:
            if wf == WF_MX_FP8 and W4A8_MMA_KERNEL == "mma8" and m_per_expert <= W4A8_MMA8_MAX_ROWS_PER_EXPERT:
                return mma_config(m_per_expert, experts, gated, kernel="mma8", F16MMA=W4A8_MMA_F16)
            return mma_config(m_per_expert, experts, gated)
        if wg_ok and wf == WF_MX_BF16 and m_per_expert > WG_MIN_ROWS_PER_EXPERT:
            return wg_config(m_per_expert)
    if wf == WF_MX_BF16:
        # v2 loop (E8M0 scale folded into the unpack, one K tile of BK elements per step) on the
        # K-tile-major weights and scales the layer hands it (WTILE / STILE). Decode: narrow tiles and
        # 2 warps keep many programs streaming weights; prefill: wider N tiles reuse each activation
        # tile over more weight rows.
        if m_per_expert <= 16:
            cfg = dict(BM=16, BN=64, BK=128, GROUP_M=4, num_warps=2, num_stages=3, MXV=1)
            # few experts at decode: split K so that the weight stream is spread over every SM
            cfg["SPLIT_K"] = split_k_for(cfg, n, k, experts, slots)
        elif m_per_expert <= 64:
            cfg = dict(BM=32, BN=128, BK=128, GROUP_M=4, num_warps=4, num_stages=3, MXV=1)
        else:
            # prefill: every weight tile would be unpacked once per row tile; dequantizing the
            # weights to bf16 once per call and running the bf16 GEMM does the unpack once
            return _unpaired(dict(default_config("bf16", m_per_expert, n, k, gated), DEQUANT_BF16=1))
    elif wf == WF_MX_FP8:
        if wg_ok and mma_rows < m_per_expert <= W4A8_WG_MAX_ROWS_PER_EXPERT:
            return wg_config(m_per_expert, kernel=W4A8_WG_KERNEL,
                             **({"LUT": W4A8_WG8_LUT} if W4A8_WG_KERNEL == "wg8" else {}))
        if m_per_expert > 64 or (mma_ok and m_per_expert > mma_rows):
            # prefill: the weights dequantized once per call to e4m3 with a scale per row (E2M1
            # times 2^(S - Smax + 6): exact for every MX group within 2^14 of the row's largest), then
            # the fp8 GEMM: FP8 MMAs at the fp8 kernel's rate
            return _unpaired(dict(default_config("fp8", m_per_expert, n, k, gated, slots, experts), DEQUANT_FP8=1))
        # one MX group per dot, GPI groups unrolled per loop step for bytes in flight
        cfg = dict(BM=16, BN=64, BK=128, GROUP_M=4, num_warps=4, num_stages=4, GPI=3)
    elif wf == WF_FP8 and m_per_expert <= 64:
        # swapped A/B: the 64 weight rows are the warpgroup MMA's M side, so the e4m3 operands reach
        # FP8 MMAs (with the few token rows as M, Triton takes mma.sync, which upcasts e4m3 to FP16);
        # BK=256 at decode: twice the bytes per pipeline stage; 3 stages while the slots are fewer
        # than the experts (smaller programs, more of them resident per SM)
        if m_per_expert <= 16:
            cfg = dict(BM=16, BN=64, BK=256, GROUP_M=1, num_warps=4, num_stages=3 if m_per_expert <= 1 else 4,
                       SWAP_AB=1)
        else:
            # 64 token rows as the MMA's N side: an expert's rows fit one row block, so its weights
            # stream once (32-row blocks read them twice for the experts with more than 32 rows)
            cfg = dict(BM=64, BN=64, BK=128, GROUP_M=8, num_warps=4, num_stages=4, SWAP_AB=1)
    elif wf == WF_FP8:
        # prefill: 128-row tiles, 8 warps, BK=128 and 4 stages; gemm1 reads a gate and an up tile of
        # BN=128 rows per step (256 weight rows), the down GEMM one 256-row tile. From 128 rows per
        # expert gemm1 reads one 256-row tile of gate|up rows paired in blocks of 128 (one m64n256 MMA
        # per K slice and one accumulator instead of two 128-wide MMAs and two accumulators)
        cfg = dict(BM=128, BN=128 if gated else 256, BK=128, GROUP_M=8, num_warps=8, num_stages=4)
        if m_per_expert >= FP8_GU_PAIRED_MIN_ROWS_PER_EXPERT and gated:
            cfg.update(BN=256, GU_PAIRED=1)
    elif m_per_expert <= 16:
        cfg = dict(BM=16, BN=64, BK=128, GROUP_M=1, num_warps=4, num_stages=4)
    elif m_per_expert <= 64:
        cfg = dict(BM=32, BN=64, BK=128, GROUP_M=4, num_warps=4, num_stages=4)
        if wf == WF_BF16:
            cfg["SWAP_AB"] = 1   # weight rows as the 64-row MMA side (fp8-block keeps the plain loop)
    elif m_per_expert <= 256:
        cfg = dict(BM=64, BN=64 if gated else 128, BK=64, GROUP_M=8, num_warps=4, num_stages=4)
    else:
        cfg = dict(BM=128, BN=64 if gated else 128, BK=64, GROUP_M=8, num_warps=8, num_stages=3)
        if wf == WF_BF16 and gated and m_per_expert > BF16_GU_PAIRED_MIN_ROWS_PER_EXPERT:
            cfg.update(BN=256, GU_PAIRED=1)
    if INTERPRET:
        cfg.update(BM=16, BN=16, BK=64 if cfg.get("MXV") else 32, num_stages=1, GPI=min(cfg.get("GPI", 1), 3))
    return cfg


def cuda_variants(models, batches, formats=("mxfp4", "mxfp4-w4a8")) -> list:
    """The compiled shapes (mx_cuda.Variant, WgVariant) of the CUDA MXFP4 kernels that the default
    configurations pick for each model's MoE layer (tp = ep = 1) at these batches, as a Hopper GPU with both
    kernels would run them, for any routing: every count of experts with rows up to the count where the
    choice stops depending on it (MMA_DOWN_ONE_TILE_EXPERTS), and the largest possible. models: shape
    dicts (hidden_size, intermediate_size, num_experts, top_k). Sorted by source and shape."""
    found = set()
    for sh in models:
        h, i, e, top_k = sh["hidden_size"], sh["intermediate_size"], sh["num_experts"], sh["top_k"]
        for b in batches:
            slots = b * top_k
            m = max(1.0, slots / e)   # as the layer counts rows per expert
            most = min(e, slots)
            for touched in {*range(1, min(most, MMA_DOWN_ONE_TILE_EXPERTS + 1) + 1), most}:
                for fmt in formats:
                    for n, k, gated in ((i, h, True), (h, i, False)):
                        cfg = default_config(fmt, m, n, k, gated, slots=slots, experts=touched, local_experts=e,
                                             cuda_kernels=True)
                        if cfg.get("KERNEL") in ("mma", "mma8", "wg", "wg8"):
                            found.add(mx_cuda.variant_of(cfg))
    return sorted(found, key=lambda v: (v.stem, v.tag()))


def _unpaired(cfg: dict) -> dict:
    """A prefill configuration for weights dequantized per call (mxfp4, mxfp4-w4a8): the dequantized
    weights keep the gate|up row order, so a paired gemm1 tile becomes the same tile over the plain rows
    with the SwiGLU kernel after it (GLU_APART)."""
    if cfg.pop("GU_PAIRED", 0):
        cfg["GLU_APART"] = 1
    return cfg


# ----------------------------------------------------------------------------- launcher
def moe_gemm(a, a_s, w, w_s, bias, topk_w, sorted_ids, expert_ids, npp, *, out, n, k, a_div,
             fmt: str, gated: bool, mul_routed: bool, cfg: dict, up_off: int = 0, up_soff: int = 0,
             unpack_asm: bool | None = None, mx_big_scale: bool | None = None, c_div: int = 1,
             glu_buf: torch.Tensor | None = None):
    """One grouped GEMM launch. cfg["SPLIT_K"] > 1: out must be fp32 and zeroed; gated -> out is
    [slots, 2 * up_off] (raw gate | up sums, finish with swiglu()), not gated -> partial sums are added
    into rows tok // c_div (c_div = top_k: the combine is fused).
    cfg["GLU_APART"] (gated, bf16 / fp8 weights): gate and up run as one plain GEMM over all 2 * up_off
    weight rows into glu_buf [slots, 2 * up_off] (out's dtype; allocated when not given), then the SwiGLU
    kernel writes out: wide tiles over the gate|up rows instead of a gate and an up tile per program."""
    wf, aq = FMT_CODES[fmt]
    paired = bool(gated and cfg.get("GU_PAIRED"))
    if paired:
        # w, w_s, bias: the paired copies (quant.pair_gate_up_rows with block BN/2); the kernel runs its
        # plain loop over all paired rows (N) and writes the up_off = n output columns
        half = int(cfg["BN"]) // 2
        rows = 2 * half * -(-n // half)
        if wf not in (WF_BF16, WF_FP8) or int(cfg.get("SPLIT_K", 1)) > 1 or w.shape[1] != rows:
            raise ValueError(f"GU_PAIRED is for bf16 / fp8 weights without split-K, with gate|up rows paired "
                             f"in blocks of BN/2 = {half} ([E, {rows}, K]); got {fmt}, {tuple(w.shape)}")
        n, up_off, gated, mul_routed = rows, n, False, False
    if gated and cfg.get("GLU_APART"):
        if wf not in (WF_BF16, WF_FP8) or int(cfg.get("SPLIT_K", 1)) > 1 or n != up_off:
            raise ValueError(f"GLU_APART is for bf16 / fp8 weights without split-K, gate|up rows [2n, K]; not {fmt}")
        if glu_buf is None:
            glu_buf = torch.empty(out.shape[0], 2 * n, dtype=out.dtype, device=out.device)
        assert glu_buf.shape == (out.shape[0], 2 * n), "glu_buf: [slots, 2n]"
        moe_gemm(a, a_s, w, w_s, bias, topk_w, sorted_ids, expert_ids, npp, out=glu_buf, n=2 * n, k=k,
                 a_div=a_div, fmt=fmt, gated=False, mul_routed=False, cfg=dict(cfg, GLU_APART=0),
                 unpack_asm=unpack_asm)
        return swiglu(glu_buf, out, n)
    if wf == WF_MX_BF16:
        aq = AQ_NONE
    if unpack_asm is None:
        unpack_asm = not INTERPRET
    bm, bn, bk = cfg["BM"], cfg["BN"], cfg["BK"]
    if wf == WF_FP8B:
        assert 128 % bk == 0
    cap = sorted_ids.numel()
    split = int(cfg.get("SPLIT_K", 1))
    mxv = max(1, int(cfg.get("MXV", 1))) if wf == WF_MX_BF16 else 0  # mxfp4 x bf16: MXV loop only
    if split > 1:
        assert out.dtype == torch.float32, "split-K accumulates into an fp32 buffer"
        assert wf != WF_MX_FP8, "split-K needs the MXV>=1 loop (mxfp4 x bf16)"
    grid = (triton.cdiv(cap, bm) * triton.cdiv(n, bn), split)
    swap_ab = bool(cfg.get("SWAP_AB", 0))
    if swap_ab and wf not in (WF_BF16, WF_FP8):
        raise ValueError(f"SWAP_AB is for bf16 / fp8 weights (mxfp4: MXV=2), not {fmt}")
    gu_one_dot = bool(cfg.get("GU_ONE_DOT", 0))
    if gu_one_dot and (wf not in (WF_BF16, WF_FP8) or swap_ab):
        raise ValueError(f"GU_ONE_DOT is for the unswapped bf16 / fp8 loop, not {fmt}"
                         + (" with SWAP_AB" if swap_ab else ""))
    if a_s is None:
        a_s = a  # unused
    if w_s is None:
        w_s = w
    has_bias = bias is not None
    if not has_bias:
        bias = w
    if mxv:
        assert bk % 32 == 0 and k % 32 == 0
    if mx_big_scale is None:
        mx_big_scale = bool(mxv and unpack_asm and int(w_s.max()) > 128)  # host sync; callers pass it
    # mxfp4 scales either [E, N, K/32] or K-tile-major [E, Kt, N, 4] (quant.tile_mx_scales; STILE)
    stile = bool(mxv and w_s.dim() == 4)
    if stile:
        assert w_s.shape[-1] == 4 and w_s.shape[1] * 4 * 32 >= k, "tiled scales: [E, ceil(K/128), N, 4]"
    # mxfp4 weights either [E, N, K/2] or K-tile-major [E, Kt, N, 64] (quant.tile_mx_weights; WTILE)
    wtile = bool(mxv and w.dim() == 4)
    if wtile:
        assert w.shape[-1] == 64 and w.shape[1] * 128 >= k, "tiled weights: [E, ceil(K/128), N, 64]"
    moe_gemm_kernel[grid](
        a, a_s, w, w_s, bias, out, topk_w, sorted_ids, expert_ids, npp,
        n, k, topk_w.numel(), up_off, up_soff,
        a.stride(0), a_s.stride(0) if a_s.dim() else 1,
        w.stride(0), w.stride(1), w_s.stride(0), w_s.stride(1) if w_s.dim() > 1 else 1,
        bias.stride(0) if has_bias else 0, out.stride(0),
        A_DIV=a_div, WF=wf, AQ=aq, GATED=gated, HAS_BIAS=has_bias, MUL_ROUTED=mul_routed,
        BM=bm, BN=bn, BK=bk, GROUP_M=cfg["GROUP_M"], EVEN_K=(k % bk == 0),
        UNPACK_ASM=bool(unpack_asm), DOT_F32=INTERPRET,
        GPI=(cfg.get("GPI", 1) if (wf in MX_CODES and (k // 32) % cfg.get("GPI", 1) == 0) else 1),
        MXV=mxv, BIG_SCALE=bool(mx_big_scale), SPLIT_K=split, C_DIV=(c_div if split > 1 else 1), STILE=stile, WTILE=wtile,
        KPAIR=bool(mxv == 2 and cfg.get("KPAIR", 0)), SWAP_AB=swap_ab, GU_ONE_DOT=gu_one_dot and gated,
        GU_PAIRED=paired,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        **({"maxnreg": int(cfg["maxnreg"])} if cfg.get("maxnreg") and not INTERPRET else {}),
    )
    return out


@triton.jit
def swiglu_kernel(x_ptr, o_ptr, N, stride_x, stride_o, BLOCK: tl.constexpr):
    """out[r, :N] = clamped SwiGLU(gate = x[r, :N], up = x[r, N:2N]) (GPT-OSS, as gemm1's epilogue)."""
    r = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = c < N
    g = tl.load(x_ptr + r * stride_x + c, mask=m, other=0.0).to(tl.float32)
    u = tl.load(x_ptr + r * stride_x + N + c, mask=m, other=0.0).to(tl.float32)
    y = _swiglu_gptoss(g, u)
    tl.store(o_ptr + r * stride_o + c, y.to(o_ptr.dtype.element_ty), mask=m)


def swiglu(ws: torch.Tensor, out: torch.Tensor, n: int):
    """Finish a gemm1 run without its SwiGLU epilogue (split-K, GLU_APART): [rows, 2n] gate|up sums -> out
    [rows, n]."""
    rows = ws.shape[0]
    if rows:
        blk = 1024 if n > 512 else triton.next_power_of_2(max(n, 16))
        swiglu_kernel[(rows, triton.cdiv(n, blk))](ws, out, n, ws.stride(0), out.stride(0), BLOCK=blk, num_warps=4)
    return out


# ----------------------------------------------------------------------------- mxfp4 -> bf16 (prefill)
@triton.jit
def dequant_mx_kernel(w_ptr, w_s_ptr, o_ptr, N, K, stride_we, stride_wn, stride_wse, stride_wsn,
                      stride_oe, stride_on, pair_i, BN: tl.constexpr, UNPACK_ASM: tl.constexpr,
                      BIG_SCALE: tl.constexpr, PAIR_H: tl.constexpr = 0):
    """One K tile (128 elements) of BN rows of one expert: K-tile-major "lanes" weights and scales
    (quant.tile_mx_weights / tile_mx_scales) -> bf16 rows [E, N, K], with the GEMM's own unpack.
    PAIR_H > 0: gate|up rows (gate rows below pair_i) go to their places in the paired order of
    quant.pair_gate_up_rows (blocks of PAIR_H gate rows, each followed by the same up rows)."""
    e = tl.program_id(2).to(tl.int64)
    kt = tl.program_id(1)
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    n_mask = offs_n < N
    offs_n_safe = tl.where(n_mask, offs_n, 0)
    G: tl.constexpr = 4
    gg = tl.arange(0, G)
    jj = tl.arange(0, 16)
    if UNPACK_ASM:
        jpos = jj
    else:
        jpos = (jj & ~3) | ((jj & 1) << 1)
    wb, wb1, sc = _mx_load(w_ptr + e * stride_we, w_s_ptr + e * stride_wse, offs_n_safe, kt, K, stride_wn,
                           stride_wsn, gg, jpos, G, UNPACK_ASM, False, True, True)
    w_lo, w_hi = _mx_unpack(wb, wb1, sc, jj, BN, 128, G, UNPACK_ASM, BIG_SCALE, 1)
    qq = tl.arange(0, 64)
    cols = kt * 128 + (qq // 16) * 32 + (qq % 16)         # plane 0: elements 0..15 of each group
    o_n = offs_n
    if PAIR_H > 0:
        up = offs_n >= pair_i
        r = tl.where(up, offs_n - pair_i, offs_n)
        o_n = (r // PAIR_H) * (2 * PAIR_H) + tl.where(up, PAIR_H, 0) + r % PAIR_H
    o_row = o_ptr + e * stride_oe + o_n.to(tl.int64)[:, None] * stride_on
    tl.store(o_row + cols[None, :], w_lo, mask=n_mask[:, None] & (cols < K)[None, :])
    tl.store(o_row + (cols + 16)[None, :], w_hi, mask=n_mask[:, None] & ((cols + 16) < K)[None, :])


def dequant_mx_bf16(w_tiles: torch.Tensor, s_tiles: torch.Tensor, k: int, *, out: torch.Tensor,
                    big_scale: bool, unpack_asm: bool | None = None,
                    pair: tuple[int, int] | None = None) -> torch.Tensor:
    """mxfp4 weights in the K-tile-major layouts ([E, Kt, N, 64] u8, [E, Kt, N, 4] E8M0) -> bf16
    out [E, N, k]. Prefill reads each weight tile once per 128-row (or wider) activation tile; at
    many rows per expert dequantizing once and running the BF16 GEMM does the unpack once instead.
    pair = (I, half): gate|up rows [2I] written in the paired order of quant.pair_gate_up_rows into out
    [E, 2P, k] (P = I rounded up to half; the padding rows are left as they are: zero them once)."""
    if unpack_asm is None:
        unpack_asm = not INTERPRET
    e, kt, n, _ = w_tiles.shape
    rows = n
    if pair is not None:
        inter, half = pair
        assert n == 2 * inter and half > 0
        rows = 2 * half * -(-inter // half)
    assert out.shape == (e, rows, k) and out.dtype == torch.bfloat16 and kt * 128 >= k
    bn = 16 if INTERPRET else 64
    if e:
        dequant_mx_kernel[(triton.cdiv(n, bn), kt, e)](
            w_tiles, s_tiles, out, n, k, w_tiles.stride(0), w_tiles.stride(1), s_tiles.stride(0),
            s_tiles.stride(1), out.stride(0), out.stride(1), pair[0] if pair else 0, BN=bn,
            UNPACK_ASM=bool(unpack_asm), BIG_SCALE=bool(big_scale), PAIR_H=pair[1] if pair else 0, num_warps=4)
    return out


# ----------------------------------------------------------------------------- mxfp4 -> e4m3 (w4a8 prefill)
@triton.jit
def _e2m1_code_to_f32(c):
    """4-bit E2M1 codes (int32) -> fp32 values (0, 0.5, 1, 1.5, 2, 3, 4, 6 with sign)."""
    em = c & 7
    mag = tl.where(em < 2, em.to(tl.float32) * 0.5, (1.0 + (em & 1).to(tl.float32) * 0.5) * tl.exp2(((em >> 1) - 1).to(tl.float32)))
    return tl.where((c & 8) != 0, -mag, mag)


# packed "nibbles" word (4 bytes of one MX group) + f16x2 factor -> two words of e4m3 (low nibbles,
# high nibbles) in element order: E2M1 bits placed where e4m3 spells E2M1 * 2^-6 (exact), widened
# to f16x2 by the hardware conversion, multiplied by the factor, narrowed back (round to nearest).
_W4A8_DEQ_ASM = tl.constexpr("""
        {
        .reg .b32 t0, t1, lo, hi, a;
        .reg .b16 h0, h1;
        shl.b32 t0, $2, 2;
        shl.b32 t1, $2, 4;
        and.b32 t0, t0, 0x1C1C1C1C;
        and.b32 t1, t1, 0x80808080;
        or.b32 lo, t0, t1;
        shr.b32 t0, $2, 2;
        and.b32 t0, t0, 0x1C1C1C1C;
        and.b32 t1, $2, 0x80808080;
        or.b32 hi, t0, t1;
        prmt.b32 lo, lo, 0, 0x3120;
        prmt.b32 hi, hi, 0, 0x3120;
        mov.b32 {h0, h1}, lo;
        cvt.rn.f16x2.e4m3x2 a, h0;
        mul.rn.f16x2 a, a, $3;
        cvt.rn.satfinite.e4m3x2.f16x2 h0, a;
        cvt.rn.f16x2.e4m3x2 a, h1;
        mul.rn.f16x2 a, a, $3;
        cvt.rn.satfinite.e4m3x2.f16x2 h1, a;
        mov.b32 $0, {h0, h1};
        mov.b32 {h0, h1}, hi;
        cvt.rn.f16x2.e4m3x2 a, h0;
        mul.rn.f16x2 a, a, $3;
        cvt.rn.satfinite.e4m3x2.f16x2 h0, a;
        cvt.rn.f16x2.e4m3x2 a, h1;
        mul.rn.f16x2 a, a, $3;
        cvt.rn.satfinite.e4m3x2.f16x2 h1, a;
        mov.b32 $1, {h0, h1};
        }
        """)


@triton.jit
def dequant_mx_fp8_kernel(w_ptr, s_ptr, smax_ptr, o_ptr, N, K, stride_we, stride_wn, stride_se, stride_sn,
                          stride_me, stride_oe, stride_on, BN: tl.constexpr, UNPACK_ASM: tl.constexpr,
                          GROUPS: tl.constexpr):
    """One K tile (GROUPS MX groups of 32; 4 in the interpreter's path) of BN rows of one expert: "nibbles" weights [E, N, K/2]
    and E8M0 scales [E, N, K/32] -> e4m3 rows [E, N, K] holding E2M1 * 2^(S - Smax + 6), Smax = the
    row's largest scale. UNPACK_ASM (the GPU): 32-bit words in, 32-bit words out (w_ptr / o_ptr as
    int32, strides in words); otherwise bytes and a float decode (the interpreter)."""
    e = tl.program_id(2).to(tl.int64)
    kt = tl.program_id(1)
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    n_mask = offs_n < N
    offs_n64 = tl.where(n_mask, offs_n, 0).to(tl.int64)
    smax = tl.load(smax_ptr + e * stride_me + offs_n64, mask=n_mask, other=0).to(tl.int32)
    if UNPACK_ASM:
        gg = kt * GROUPS + tl.arange(0, GROUPS)
        g_mask = gg * 32 < K
        ww = tl.arange(0, 4)
        m3 = n_mask[:, None, None] & g_mask[None, :, None]
        wv = tl.load(w_ptr + e * stride_we + offs_n64[:, None, None] * stride_wn + (gg[:, None] * 4 + ww[None, :])[None, :, :],
                     mask=m3, other=0)
        sc = tl.load(s_ptr + e * stride_se + offs_n64[:, None] * stride_sn + gg[None, :],
                     mask=n_mask[:, None] & g_mask[None, :], other=0).to(tl.int32)
        # f16 bits of 2^x, x = S - Smax + 12 (the unpack leaves E2M1 * 2^-6): normal for x >= -14,
        # subnormal down to 2^-24, zero below (values < 2^-30 of the row's largest)
        x = sc - smax[:, None] + 12
        hb = tl.where(x >= -14, (x + 15) << 10, tl.where(x >= -24, 1 << tl.maximum(x + 24, 0), 0))
        fw = (hb | (hb << 16))[:, :, None] + tl.zeros([BN, GROUPS, 4], tl.int32)
        lo, hi = tl.inline_asm_elementwise(asm=_W4A8_DEQ_ASM, constraints="=r,=r,r,r", args=[wv, fw],
                                           dtype=(tl.int32, tl.int32), is_pure=True, pack=1)
        o = o_ptr + e * stride_oe + offs_n64[:, None, None] * stride_on + (gg[:, None] * 8 + ww[None, :])[None, :, :]
        tl.store(o, lo, mask=m3)
        tl.store(o + 4, hi, mask=m3)
    else:
        kk = tl.arange(0, 128)
        k = kt * 128 + kk
        k_mask = k < K
        j = kk % 16                                           # element j (low nibble) or j + 16 (high)
        byte = kt * 64 + (kk // 32) * 16 + ((j & ~3) | ((j & 1) << 1) | ((j & 2) >> 1))   # PERM4
        m2 = n_mask[:, None] & k_mask[None, :]
        wb = tl.load(w_ptr + e * stride_we + offs_n64[:, None] * stride_wn + byte[None, :], mask=m2, other=0).to(tl.int32)
        code = tl.where(((kk % 32) >= 16)[None, :], wb >> 4, wb & 15)
        sc = tl.load(s_ptr + e * stride_se + offs_n64[:, None] * stride_sn + (k // 32)[None, :], mask=m2, other=0).to(tl.int32)
        v = _e2m1_code_to_f32(code) * tl.exp2((sc - smax[:, None] + 6).to(tl.float32))
        tl.store(o_ptr + e * stride_oe + offs_n64[:, None] * stride_on + k[None, :], v.to(tl.float8e4nv), mask=m2)


def mx_row_scale_exponents(scales: torch.Tensor) -> torch.Tensor:
    """The largest E8M0 byte of each row ([..., N, K/32] -> int32 [..., N]): the row's e4m3 scale is
    2^(Smax - 127 - 6) (dequant_mx_fp8), so that 6 * 2^6 = 384 stays under e4m3's 448."""
    return scales.amax(dim=-1).to(torch.int32)


def mx_fp8_row_scales(smax: torch.Tensor) -> torch.Tensor:
    """fp32 scale per row of dequant_mx_fp8's e4m3 weights (the fp8 GEMM's w_s): 2^(Smax - 127 - 6)."""
    return torch.exp2(smax.float() - 133.0)


def dequant_mx_fp8(w: torch.Tensor, s: torch.Tensor, smax: torch.Tensor, k: int, *, out: torch.Tensor,
                   unpack_asm: bool | None = None) -> torch.Tensor:
    """mxfp4 weights in the "nibbles" layout ([E, N, K/2] u8, scales [E, N, K/32]) -> e4m3 out [E, N, k],
    the scale of row n being 2^(smax[n] - 133). Exact for every MX group whose scale is within 14 of
    its row's largest (E2M1 * 2^(S - Smax + 6) is then an e4m3 normal or an exact subnormal); smaller
    groups round to e4m3 (their values are below 2^-9 of the row's largest)."""
    if unpack_asm is None:
        unpack_asm = not INTERPRET
    e, n, _ = w.shape
    assert out.shape == (e, n, k) and out.dtype == torch.float8_e4m3fn and k % 32 == 0
    # programs of 32 rows x 128 K on the GPU (64 x 512 was 1.4x slower on the H200: docs/performance.md);
    # 16 rows in the interpreter
    bn, groups = (32, 4) if unpack_asm and not INTERPRET else (16, 4)
    if e:
        wi, oi = (w.view(torch.int32), out.view(torch.int32)) if unpack_asm else (w, out)
        dequant_mx_fp8_kernel[(triton.cdiv(n, bn), triton.cdiv(k, 32 * groups), e)](
            wi, s, smax, oi, n, k, wi.stride(0), wi.stride(1), s.stride(0), s.stride(1), smax.stride(0),
            oi.stride(0), oi.stride(1), BN=bn, UNPACK_ASM=bool(unpack_asm), GROUPS=groups, num_warps=4)
    return out
