// MXFP4 (E2M1 weights, E8M0 scale per 32 K) x BF16 activations: the expert GEMMs of one MoE layer
// at decode, on sm_90 tensor cores through mma.sync m16n8k16 (bf16 in, fp32 accumulate).
//
// Why a CUDA kernel: at decode a GEMM is a weight stream. Every weight is used by one warp only, so
// each warp copies its weights (already in the exact MMA operand layout) through its own cp.async ring
// in shared memory and reads back only its own lane's bytes: no operand shuffles, no block-wide
// synchronisation in the K loop. They are unpacked with a few integer ops plus one bf16x2 multiply that
// also applies the E8M0 scale; the few token rows are the MMA's n8 side.
//
// Operand layouts (built by moeprof/models/quant.py: mma_mx_weights):
//   weights  w [E, Nt, Kc, 32 lanes] x 16 bytes: Nt tiles of 16 weight rows, Kc chunks of 64 K.
//            Lane L = 4 r + q holds rows r and r + 8 of the tile and K elements 16 q .. 16 q + 15 of
//            the chunk (one MX group), as four 32-bit words, word s = MMA step s (K 16 q + 4 s .. + 3),
//            each word in the "lanes" bit layout: low 16 bits the even K element, high the odd one,
//            slot A = (row r, k), B = (row r, k + 2), C = (row r + 8, k), D = (row r + 8, k + 2).
//            The MMA's K order is a permutation of the real one, the same for weights and activations.
//   scales   s [E, Nt, Kc, 16] x 2 bytes: entry 2 r + g holds the E8M0 of rows r and r + 8 for MX group g
//            of the chunk (read by lanes 4 r + 2 g and 4 r + 2 g + 1; each byte is streamed once).
//   gated (gemm1): tile rows 0-7 are gate rows 8 t .. 8 t + 7, rows 8-15 the matching up rows, so
//            one lane holds gate and up of the same output column and applies the SwiGLU in place.
//
// Rows: tokens sorted by expert (kernels/moe_gemm.py: moe_align, pad value nv); expert e's rows start
// at the sum of the padded counts of the experts before it. Grid x = the j-th expert with rows (x
// beyond the last such expert exits at once; with has_foreign the last x writes zeros to the rows
// routed to other expert-parallel ranks), grid y = groups of WN * MT tiles. A CTA is WN x WK warps:
// WN warps side by side (MT tiles each), WK warps splitting K, summed through shared memory before the
// epilogue. A pass covers G groups of 8 tokens; an expert with more rows takes more passes.

#include <stdint.h>

#ifndef MX_WN
#define MX_WN 4
#endif
#ifndef MX_WK
#define MX_WK 1
#endif
#ifndef MX_MT
#define MX_MT 1     // tiles of 16 rows per warp (they share the activation fragments)
#endif
#ifndef MX_D
#define MX_D 8      // stages of each warp's cp.async ring: chunks of 64 K in flight per warp
#endif
#ifndef MX_FLAGS
#define MX_FLAGS 2   // option bits: 1 per-warp expert scan, 2 weights before the token rows, 4 the
                     // scale factor as one multiply-add, 8 barrier-free epilogue (1 and 8: with WK == 1)
#endif
#ifndef MX_ASMEM
#define MX_ASMEM 0  // 1: the activation fragments travel through the ring too (else: L1 loads, 1 ahead)
#endif

#include "mx_common.cuh"

// a warp's K loop over its nci chunks through its D-slot ring, two chunks per iteration so that the two
// activation fragment buffers alternate without copies; no guards while both the refill chunk and the next
// chunk exist. (Unrolling a whole ring so that the slots are compile-time constants measured slower: the
// compiler then moves the activation loads closer to their use.)
template <int D, typename Step, typename Frag>
__device__ __forceinline__ void run_ring(int nci, Step& step, Frag& ab0, Frag& ab1) {
    int i = 0;
    for (; i + 1 + D < nci; i += 2) {
        step(i, i % D, ab0, ab1, false);
        step(i + 1, (i + 1) % D, ab1, ab0, false);
    }
    for (; i + 1 < nci; i += 2) {
        step(i, i % D, ab0, ab1, true);
        step(i + 1, (i + 1) % D, ab1, ab0, true);
    }
    if (i < nci) step(i, i % D, ab0, ab1, true);
    cp_async_wait<0>();
    __syncwarp();
}

// the end of a pass: with one warp per K range and option bit 8 each warp stores its own sums (no
// block-wide step, a warp that is done moves on); otherwise the WK partial tiles are summed through
// shared memory and warp wk stores groups g = wk, wk + WK, ... (the buffer held every warp's ring a
// moment ago: all warps leave the K loop first)
template <int WK, int WN, int MT, int G, typename Store>
__device__ __forceinline__ void finish_pass(const float (&acc)[MT][G][4], int ngroups,
                                            float (&red)[WK][WN][MT][G][4][32], int wk, int wn, int lane,
                                            Store& store) {
    if constexpr (WK == 1 && (MX_FLAGS & 8)) {
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
            for (int g = 0; g < G; ++g)
                if (g < ngroups) store(m, g, acc[m][g]);
    } else {
        __syncthreads();
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
            for (int g = 0; g < G; ++g)
#pragma unroll
                for (int c = 0; c < 4; ++c) red[wk][wn][m][g][c][lane] = acc[m][g][c];
        __syncthreads();
        for (int mg = wk; mg < MT * ngroups; mg += WK) {
            const int m = mg / ngroups, g = mg % ngroups;
            float v[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int j = 0; j < WK; ++j)
#pragma unroll
                for (int c = 0; c < 4; ++c) v[c] += red[j][wn][m][g][c][lane];
            store(m, g, v);
        }
        __syncthreads();
    }
}

template <int G, bool GATED, bool BIG>
__device__ __forceinline__ void mx_w4a16_body(MX_PARAMS(__restrict__, uint16_t, uint16_t)) {
    constexpr int WN = MX_WN, WK = MX_WK, D = MX_D, MT = MX_MT;
    static_assert(D >= 2, "the ring needs two stages at least");
    // one buffer: the warps' cp.async rings during the K loop, then the partial tiles to sum
    constexpr bool ASMEM = MX_ASMEM != 0;
    constexpr int RING_BYTES = WN * WK * D * 32 * (MT * (16 + 1) + (ASMEM ? G * 32 : 0));
    constexpr int RED_BYTES = WK * WN * MT * G * 4 * 32 * 4;
#if MX_ASMEM
    // with the activations in the ring the buffer outgrows the 48 KB of static shared memory: dynamic,
    // sized by the launcher (mx_cuda.smem_bytes, the same formula)
    extern __shared__ __align__(16) unsigned char smem[];
#else
    __shared__ __align__(16) unsigned char smem[RING_BYTES > RED_BYTES ? RING_BYTES : RED_BYTES];
#endif
    auto& red = *reinterpret_cast<float (*)[WK][WN][MT][G][4][32]>(smem);

    const ExpertRows er = find_rows<WK == 1 && (MX_FLAGS & 1)>(counts, num_experts, nv, block_m, has_foreign != 0);
    if (er.expert < 0) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wn = warp % WN, wk = warp / WN;
    const int tile = (blockIdx.y * WN + wn) * MT;   // the warp's first tile
    const int r = lane >> 2, q = lane & 3;

    if (er.expert == num_experts) {
        zero_foreign_rows<GATED, WN, MT>(er, sorted_ids, out, out_stride, n_out, nv);
        return;
    }

    const bool tile_ok = tile < Nt;
    const int nci = (tile_ok && wk < Kc) ? (Kc - wk + WK - 1) / WK : 0;  // chunks of this warp
    const long long wstep = (long long)WK * 32;                            // uint4 per chunk step
    // a tile past the last reads the first one again (its sums are not stored)
    const long long tstride = (long long)Kc * 32;                           // uint4 per tile
    const long long wbase = ((long long)er.expert * Nt + (tile_ok ? tile : 0)) * tstride;
    int mlast = Nt - 1 - tile;                                              // tiles m <= mlast exist
    mlast = mlast < MT - 1 ? mlast : MT - 1;
    const uint4* wq = w + wbase + (long long)wk * 32 + lane;
    // scales: 32 bytes (two uint4) per tile chunk, at 1/16 of the weights' uint4 index
    const uint4* sq = reinterpret_cast<const uint4*>(ws) + (wbase + (long long)wk * 32) / 16 + (lane & 1);
    // K % 64 == 32: the lanes with q >= 2 have no K elements in the last chunk; their weights there
    // are zero, and they read a valid (finite) piece of the same row instead of what lies past K
    const bool last_short = nci > 0 && wk + (nci - 1) * WK == Kc - 1 && (Kc - 1) * 64 + 16 * q >= K;
    // each warp's ring of D chunks in flight: 512 bytes of weights (16 per lane, read back by the
    // same lane) and 32 bytes of scales (copied by lanes 0-1, read by all: __syncwarp between)
    auto& wring = *reinterpret_cast<uint4 (*)[WN * WK][D][MT][32]>(smem);
    auto& sring = *reinterpret_cast<uint16_t (*)[WN * WK][D][MT][16]>(smem + WN * WK * D * MT * 32 * 16);
    auto& aring = *reinterpret_cast<uint4 (*)[WN * WK][D][G][32][2]>(smem + WN * WK * D * MT * 32 * 17);
    // the next chunk to copy into the ring (running pointers: no index arithmetic per chunk)
    const uint4* wsrc = wq;
    const uint4* ssrc = sq;
    const uint32_t ring_w = (uint32_t)__cvta_generic_to_shared(&wring[warp][0][0][lane]);
    const uint32_t ring_s = (uint32_t)__cvta_generic_to_shared(&sring[warp][0][0][0]) + 16 * (lane & 1);
    auto issue = [&](int slot, bool live) {
        if (live) {
#pragma unroll
            for (int m = 0; m < MT; ++m) {
                const long long toff = (m <= mlast ? m : 0) * tstride;
                asm volatile("cp.async.cg.shared.global [%0], [%1], 16;"
                             :: "r"(ring_w + (slot * MT + m) * 512), "l"(wsrc + toff));
                if (lane < 2)
                    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;"
                                 :: "r"(ring_s + (slot * MT + m) * 32), "l"(ssrc + toff / 16));
            }
            wsrc += wstep;
            ssrc += wstep / 16;
        }
        cp_async_commit();
    };
    const long long astep = (long long)WK * 64;       // activation elements per chunk step

    for (int g0 = 0; g0 * 8 < er.count; g0 += G) {
        if constexpr (!ASMEM && (MX_FLAGS & 2)) {
            // the weight stream first: its copies are in flight while the token rows are looked up
            if (nci > 0) {
                wsrc = wq;
                ssrc = sq;
#pragma unroll
                for (int j = 0; j < D - 1; ++j) issue(j, j < nci);
            }
        }
        // this lane's token row of each group (B operand column r); a pad row reads row 0: an MMA
        // column depends on its own token only, and pad columns are never stored
        const uint16_t* arow[G];
#pragma unroll
        for (int g = 0; g < G; ++g) {
            int idx = (g0 + g) * 8 + r;
            int slot = idx < er.count ? sorted_ids[er.start + idx] : nv;
            arow[g] = a + (long long)(slot < nv ? slot / a_div : 0) * a_stride + 16 * q + wk * 64;
        }
        int ngroups = (er.count - g0 * 8 + 7) / 8;   // groups with rows in this pass (CTA-uniform)
        if (ngroups > G) ngroups = G;

        float acc[MT][G][4];
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
            for (int g = 0; g < G; ++g) acc[m][g][0] = acc[m][g][1] = acc[m][g][2] = acc[m][g][3] = 0.f;
        if (nci > 0) {
            // the last chunk's activations (K % 64 == 32: lanes past K read chunk 0 of the row)
            const long long a_last = last_short ? -(long long)wk * 64 : (long long)(nci - 1) * astep;
            // ASMEM: chunk ci's activation fragments into ring slot `slot` (before the chunk's commit;
            // each lane copies the 32 bytes it reads back)
            auto issue_act = [&](int slot, int ci) {
                if constexpr (ASMEM) {
                    if (ci < nci) {
#pragma unroll
                        for (int g = 0; g < G; ++g) {
                            const uint16_t* p = arow[g] + (ci == nci - 1 ? a_last : (long long)ci * astep);
                            const uint32_t dst = (uint32_t)__cvta_generic_to_shared(&aring[warp][slot][g][lane][0]);
                            // .ca: through L1, where the other warps of the SM find the same lines
                            asm volatile("cp.async.ca.shared.global [%0], [%1], 16;" :: "r"(dst), "l"(p));
                            asm volatile("cp.async.ca.shared.global [%0], [%1], 16;" :: "r"(dst + 16), "l"(p + 8));
                        }
                    }
                }
            };
            if constexpr (ASMEM || !(MX_FLAGS & 2)) {
                wsrc = wq;
                ssrc = sq;
#pragma unroll
                for (int j = 0; j < D - 1; ++j) {
                    issue_act(j, j);
                    issue(j, j < nci);
                }
            }
            const uint16_t* anext[G];
#pragma unroll
            for (int g = 0; g < G; ++g) anext[g] = arow[g];
            auto load_act = [&](uint4 (&dst)[G][2], bool last) {
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    const uint16_t* p = last ? arow[g] + a_last : anext[g];
                    dst[g][0] = ld_v4(p);
                    dst[g][1] = ld_v4(p + 8);
                    anext[g] += astep;
                }
            };
            // chunk i (in ring slot `slot`): wait for it, refill the ring with chunk i + D - 1 (when
            // there is one), unpack and MMA with the activations in cur while those of chunk i + 1 load
            // into nxt
            auto step = [&](int i, int slot, uint4 (&cur)[G][2], uint4 (&nxt)[G][2], bool guarded) {
                cp_async_wait<D - 2>();
                __syncwarp();
                uint4 wv[MT];
                uint32_t s[MT];
#pragma unroll
                for (int m = 0; m < MT; ++m) {
                    wv[m] = wring[warp][slot][m][lane];
                    s[m] = sring[warp][slot][m][2 * r + (q >> 1)];
                }
                if constexpr (ASMEM) {
#pragma unroll
                    for (int g = 0; g < G; ++g) {
                        cur[g][0] = aring[warp][slot][g][lane][0];
                        cur[g][1] = aring[warp][slot][g][lane][1];
                    }
                    issue_act((i + D - 1) % D, i + D - 1);
                }
                issue((i + D - 1) % D, !guarded || i + D - 1 < nci);
                if (!ASMEM && (!guarded || i + 1 < nci)) load_act(nxt, guarded && i + 1 == nci - 1);
#pragma unroll
                for (int m = 0; m < MT; ++m) {
                    const uint32_t br = scale_word<BIG>(s[m] & 0xFFu), br8 = scale_word<BIG>(s[m] >> 8);
                    const uint32_t words[4] = {wv[m].x, wv[m].y, wv[m].z, wv[m].w};
#pragma unroll
                    for (int st = 0; st < 4; ++st) {
                        uint32_t af[4];
                        unpack_word<BIG>(words[st], br, br8, af);
#pragma unroll
                        for (int g = 0; g < G; ++g) {
                            const uint4& v = cur[g][st >> 1];
                            mma_bf16(acc[m][g], af, (st & 1) ? v.z : v.x, (st & 1) ? v.w : v.y);
                        }
                    }
                }
            };
            uint4 ab0[G][2], ab1[G][2];
            if (!ASMEM) load_act(ab0, nci == 1);
            run_ring<D>(nci, step, ab0, ab1);
        }

        // the epilogue of one 16-row tile m and token group g of this pass, from its sums v
        auto store = [&](int m, int g, const float (&v)[4]) {
            if (!tile_ok || m > mlast) return;
            store_tile<GATED, false>(v, tile + m, g0 + g, er, r, q, sorted_ids, nv, a_div, a_scale, bias,
                                     bias_stride, up_off, topk_w, out, out_stride, n_out);
        };
        finish_pass<WK, WN, MT, G>(acc, ngroups, red, wk, wn, lane, store);
    }
}

// resident warps per SM aimed at per token-group count (mx_cuda.Variant W1 / W2; registers per thread at
// most 65536 / (32 x warps)): the weight stream needs many warps in flight
#ifndef MX_WARPS_G1
#define MX_WARPS_G1 24
#endif
#ifndef MX_WARPS_G2
#define MX_WARPS_G2 16
#endif
#define MX_WARPS_PER_SM(G) ((G) == 1 ? MX_WARPS_G1 : (G) == 2 ? MX_WARPS_G2 : 8)
#define MX_MIN_BLOCKS(G) (MX_WARPS_PER_SM(G) / (MX_WN * MX_WK) > 0 ? MX_WARPS_PER_SM(G) / (MX_WN * MX_WK) : 1)

#define MX_KERNEL(G, GATED, BIG, NAME)                                                    \
    extern "C" __global__ void __launch_bounds__(32 * MX_WN * MX_WK, MX_MIN_BLOCKS(G)) NAME(MX_ARGS) { \
        mx_w4a16_body<G, GATED, BIG>(MX_PASS);                                              \
    }

MX_KERNEL(1, true, false, mx_w4a16_g1_gated)
MX_KERNEL(2, true, false, mx_w4a16_g2_gated)
MX_KERNEL(4, true, false, mx_w4a16_g4_gated)
MX_KERNEL(1, false, false, mx_w4a16_g1_down)
MX_KERNEL(2, false, false, mx_w4a16_g2_down)
MX_KERNEL(4, false, false, mx_w4a16_g4_down)
MX_KERNEL(1, true, true, mx_w4a16_g1_gated_big)
MX_KERNEL(2, true, true, mx_w4a16_g2_gated_big)
MX_KERNEL(4, true, true, mx_w4a16_g4_gated_big)
MX_KERNEL(1, false, true, mx_w4a16_g1_down_big)
MX_KERNEL(2, false, true, mx_w4a16_g2_down_big)
MX_KERNEL(4, false, true, mx_w4a16_g4_down_big)

// ============================================================================ W4A8: e4m3 activations
// MXFP4 weights x e4m3 activations (mxfp4-w4a8 at decode) through mma.sync m16n8k32 .e4m3: the
// activations are read as the e4m3 bytes the row quantizer wrote (no conversion kernel), the weights
// become e4m3 by bit placement (sign -> bit 7, e1 e0 m -> bits 4..2: exactly E2M1 * 2^-6, the 0.5
// subnormal included) and one MMA step is 32 K = one MX group of each row, so the E8M0 scale is applied
// to the step's fp32 result: acc += mma(a, b, 0) * 2^(S - 121) (the 2^6 undoes the placement).
// (sm_90 runs this instruction as e4m3 -> f16 conversions plus f16 MMAs; ptxas shares the weight
// conversions between the token groups that use the same fragments.)
//
// Operand layouts (quant.mma8_mx_weights): K runs in chunks of 64 (2 MMA steps = 2 MX groups).
//   weights  w [E, Nt, Kc, 32 lanes] x 16 bytes: lane L = 4 g + t holds rows g and g + 8 of the tile
//            and, in step st (group 2 c + st), the K elements 64 c + 32 st + 8 t .. + 7: MMA K
//            positions 4 t .. 4 t + 3 are those elements 0-3, 16 + 4 t .. are 4-7 (the same
//            permutation for the activations, so a lane's B fragment is 8 contiguous bytes of its
//            token row). Words: (step 0, row g), (step 0, row g + 8), (step 1, row g), (step 1, row g + 8);
//            each word x gives two A registers in 4 integer ops: x & M (elements 0-3) and
//            ((x >> 2) ^ (x << 2)) & M (elements 4-7), M = 0x9C9C9C9C (the e4m3 bits 7, 4, 3, 2).
//   scales   s [E, Nt, Kc, 8, 4] bytes: S + 6 of (row g, group 2c), (g + 8, 2c), (g, 2c + 1), (g + 8, 2c + 1);
//            shifted into an fp32 exponent field they are 2^(S - 121) (S <= 248).
// Rows, grid, CTA shape, gated tile order and the epilogue are those of mx_w4a16_body.

__device__ __forceinline__ uint2 ld_v2(const void* p) {
    uint2 v;
    asm volatile("ld.global.nc.v2.u32 {%0,%1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
}

__device__ __forceinline__ void mma_e4m3(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%10,%10,%10};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.f));
}

// F16 variant: the same step as two f16 MMAs (what ptxas makes of the e4m3 MMA on sm_90) written out,
// so that the second one accumulates onto the first and the fp32 result needs no extra add of a zero C.
// Four e4m3 bytes -> f16x2 of bytes 0, 1 (lo) and of bytes 2, 3 (hi), exact.
__device__ __forceinline__ void e4m3x4_to_f16x2(uint32_t x, uint32_t& lo, uint32_t& hi) {
    asm("{\n\t.reg .b16 l, h;\n\tmov.b32 {l, h}, %2;\n\tcvt.rn.f16x2.e4m3x2 %0, l;\n\t"
        "cvt.rn.f16x2.e4m3x2 %1, h;\n\t}"
        : "=r"(lo), "=r"(hi) : "r"(x));
}

__device__ __forceinline__ void mma_f16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1, bool zero_c) {
    if (zero_c) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%10,%10,%10,%10};"
            : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.f));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
}

// one MMA step of 32 K in the e4m3 fragment layout as two f16 MMAs: the first takes bytes 0, 1 of every
// A and B register (MMA K 4 t, 4 t + 1 and 16 + 4 t, + 1 as the f16 fragment's K 2 t, 2 t + 1 and
// 2 t + 8, + 9), the second bytes 2, 3: the same K permutation on both operands, so the same sum.
// bl / bh: the B fragment already converted (bl = {b0 lo, b1 lo}, bh = {b0 hi, b1 hi}).
__device__ __forceinline__ void mma_e4m3_as_f16(float d[4], const uint32_t a[4], const uint32_t bl[2],
                                                const uint32_t bh[2]) {
    uint32_t al[4], ah[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) e4m3x4_to_f16x2(a[j], al[j], ah[j]);
    mma_f16(d, al, bl[0], bl[1], true);
    mma_f16(d, ah, bh[0], bh[1], false);
}

// byte `B` of the scale word (an S + 6) -> the fp32 2^(S - 121)
template <int B>
__device__ __forceinline__ float scale8(uint32_t w) {
    const uint32_t bits = (B < 3 ? (w << (23 - 8 * B)) : (w >> 1)) & 0x7F800000u;
    return __uint_as_float(bits);
}

template <int G, bool GATED, bool F16>
__device__ __forceinline__ void mx_w4a8_body(MX_PARAMS(__restrict__, uint8_t, uint8_t)) {
    constexpr int WN = MX_WN, WK = MX_WK, D = MX_D, MT = MX_MT;
    static_assert(D >= 2, "the ring needs two stages at least");
    // one buffer: the warps' cp.async rings (512 bytes of weights and 32 of scales per tile and
    // stage) during the K loop, then (WK > 1) the partial tiles to sum
    constexpr int RING_BYTES = WN * WK * D * MT * (512 + 32);
    constexpr int RED_BYTES = WK * WN * MT * G * 4 * 32 * 4;
    __shared__ __align__(16) unsigned char smem8[RING_BYTES > RED_BYTES ? RING_BYTES : RED_BYTES];
    auto& red = *reinterpret_cast<float (*)[WK][WN][MT][G][4][32]>(smem8);

    const ExpertRows er = find_rows<WK == 1 && (MX_FLAGS & 1)>(counts, num_experts, nv, block_m, has_foreign != 0);
    if (er.expert < 0) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wn = warp % WN, wk = warp / WN;
    const int tile = (blockIdx.y * WN + wn) * MT;
    const int r = lane >> 2, q = lane & 3;

    if (er.expert == num_experts) {
        zero_foreign_rows<GATED, WN, MT>(er, sorted_ids, out, out_stride, n_out, nv);
        return;
    }

    const bool tile_ok = tile < Nt;
    const int nci = (tile_ok && wk < Kc) ? (Kc - wk + WK - 1) / WK : 0;
    const long long wstep = (long long)WK * 32;        // uint4 of weights per chunk step
    const long long tstride = (long long)Kc * 32;      // uint4 of weights per tile
    // a tile past the last reads the first one again (its sums are not stored)
    const long long wbase = ((long long)er.expert * Nt + (tile_ok ? tile : 0)) * tstride;
    int mlast = Nt - 1 - tile;
    mlast = mlast < MT - 1 ? mlast : MT - 1;
    // scales: 2 uint4 per tile and chunk, copied by lanes 0 and 1
    const uint4* wq = w + wbase + (long long)wk * 32 + lane;
    const uint4* sq = reinterpret_cast<const uint4*>(ws) + wbase / 16 + (long long)wk * 2 + (lane & 1);
    // K % 64 == 32: the last chunk holds one MX group; the warp that has it skips its second step
    // (no activation loads past K either)
    const bool half_last = (K & 63) != 0 && nci > 0 && wk + (nci - 1) * WK == Kc - 1;
    auto& wring = *reinterpret_cast<uint4 (*)[WN * WK][D][MT][32]>(smem8);
    auto& sring = *reinterpret_cast<uint32_t (*)[WN * WK][D][MT][8]>(smem8 + WN * WK * D * MT * 512);
    const uint4* wsrc = wq;
    const uint4* ssrc = sq;
    const uint32_t ring_w = (uint32_t)__cvta_generic_to_shared(&wring[warp][0][0][lane]);
    const uint32_t ring_s = (uint32_t)__cvta_generic_to_shared(&sring[warp][0][0][0]) + 16 * (lane & 1);
    auto issue = [&](int slot, bool live) {
        if (live) {
#pragma unroll
            for (int m = 0; m < MT; ++m) {
                const long long toff = (m <= mlast ? m : 0) * tstride;
                asm volatile("cp.async.cg.shared.global [%0], [%1], 16;"
                             :: "r"(ring_w + (slot * MT + m) * 512), "l"(wsrc + toff));
                if (lane < 2)
                    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;"
                                 :: "r"(ring_s + (slot * MT + m) * 32), "l"(ssrc + toff / 16));
            }
            wsrc += wstep;
            ssrc += wstep / 16;
        }
        cp_async_commit();
    };
    const long long astep = (long long)WK * 64;        // activation bytes per chunk step

    for (int g0 = 0; g0 * 8 < er.count; g0 += G) {
        // the weight stream first: its copies are in flight while the token rows are looked up
        // (MX_FLAGS & 2, as in mx_w4a16_body; else after)
        auto start_stream = [&]() {
            wsrc = wq;
            ssrc = sq;
#pragma unroll
            for (int j = 0; j < D - 1; ++j) issue(j, j < nci);
        };
        if constexpr ((MX_FLAGS & 2) != 0) {
            if (nci > 0) start_stream();
        }
        // this lane's token row of each group (B operand column r); a pad row reads row 0: an MMA
        // column depends on its own token only, and pad columns are never stored
        const uint8_t* arow[G];
#pragma unroll
        for (int g = 0; g < G; ++g) {
            int idx = (g0 + g) * 8 + r;
            int slot = idx < er.count ? sorted_ids[er.start + idx] : nv;
            arow[g] = a + (long long)(slot < nv ? slot / a_div : 0) * a_stride + 8 * q + wk * 64;
        }
        int ngroups = (er.count - g0 * 8 + 7) / 8;     // groups with rows in this pass (CTA-uniform)
        if (ngroups > G) ngroups = G;

        float acc[MT][G][4];
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
            for (int g = 0; g < G; ++g) acc[m][g][0] = acc[m][g][1] = acc[m][g][2] = acc[m][g][3] = 0.f;
        if (nci > 0) {
            if constexpr ((MX_FLAGS & 2) == 0) start_stream();
            const uint8_t* anext[G];
#pragma unroll
            for (int g = 0; g < G; ++g) anext[g] = arow[g];
            // a chunk's activation fragments: 8 bytes of step 0 and 8 of step 1 (none past K)
            auto load_act = [&](uint2 (&dst)[G][2], bool last) {
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    dst[g][0] = ld_v2(anext[g]);
                    dst[g][1] = (last && half_last) ? make_uint2(0u, 0u) : ld_v2(anext[g] + 32);
                    anext[g] += astep;
                }
            };
            // chunk i (in ring slot `slot`): wait for it, refill the ring with chunk i + D - 1 (when
            // there is one), MMA its two steps with the activations in cur while those of chunk i + 1
            // load into nxt
            auto step = [&](int i, int slot, uint2 (&cur)[G][2], uint2 (&nxt)[G][2], bool guarded) {
                cp_async_wait<D - 2>();
                __syncwarp();
                uint4 wv[MT];
                uint32_t sw[MT];
#pragma unroll
                for (int m = 0; m < MT; ++m) {
                    wv[m] = wring[warp][slot][m][lane];
                    sw[m] = sring[warp][slot][m][r];
                }
                issue((i + D - 1) % D, !guarded || i + D - 1 < nci);
                if (!guarded || i + 1 < nci) load_act(nxt, guarded && i + 1 == nci - 1);
                const bool two = !(guarded && half_last && i == nci - 1);
                // F16: the chunk's B fragments converted once, shared by the MT tiles
                uint32_t bl[G][2][2], bh[G][2][2];
                if constexpr (F16) {
#pragma unroll
                    for (int g = 0; g < G; ++g)
#pragma unroll
                        for (int st = 0; st < 2; ++st) {
                            e4m3x4_to_f16x2(cur[g][st].x, bl[g][st][0], bh[g][st][0]);
                            e4m3x4_to_f16x2(cur[g][st].y, bl[g][st][1], bh[g][st][1]);
                        }
                }
                auto mma_step = [&](float part[4], const uint32_t af[4], int g, int st) {
                    if constexpr (F16) {
                        mma_e4m3_as_f16(part, af, bl[g][st], bh[g][st]);
                    } else {
                        mma_e4m3(part, af, cur[g][st].x, cur[g][st].y);
                    }
                };
#pragma unroll
                for (int m = 0; m < MT; ++m) {
                    uint32_t af[4];
                    float part[4];
                    {   // step 0: group 2 c
                        unpack8_word(wv[m].x, af[0], af[2]);
                        unpack8_word(wv[m].y, af[1], af[3]);
                        const float f = scale8<0>(sw[m]), f8 = scale8<1>(sw[m]);
#pragma unroll
                        for (int g = 0; g < G; ++g) {
                            mma_step(part, af, g, 0);
                            acc[m][g][0] = fmaf(part[0], f, acc[m][g][0]);
                            acc[m][g][1] = fmaf(part[1], f, acc[m][g][1]);
                            acc[m][g][2] = fmaf(part[2], f8, acc[m][g][2]);
                            acc[m][g][3] = fmaf(part[3], f8, acc[m][g][3]);
                        }
                    }
                    if (two) {   // step 1: group 2 c + 1
                        unpack8_word(wv[m].z, af[0], af[2]);
                        unpack8_word(wv[m].w, af[1], af[3]);
                        const float f = scale8<2>(sw[m]), f8 = scale8<3>(sw[m]);
#pragma unroll
                        for (int g = 0; g < G; ++g) {
                            mma_step(part, af, g, 1);
                            acc[m][g][0] = fmaf(part[0], f, acc[m][g][0]);
                            acc[m][g][1] = fmaf(part[1], f, acc[m][g][1]);
                            acc[m][g][2] = fmaf(part[2], f8, acc[m][g][2]);
                            acc[m][g][3] = fmaf(part[3], f8, acc[m][g][3]);
                        }
                    }
                }
            };
            uint2 ab0[G][2], ab1[G][2];
            load_act(ab0, nci == 1);
            run_ring<D>(nci, step, ab0, ab1);
        }

        // the epilogue of one 16-row tile m and token group g of this pass, from its sums v
        auto store = [&](int m, int g, const float (&v)[4]) {
            if (!tile_ok || m > mlast) return;
            store_tile<GATED, true>(v, tile + m, g0 + g, er, r, q, sorted_ids, nv, a_div, a_scale, bias,
                                    bias_stride, up_off, topk_w, out, out_stride, n_out);
        };
        finish_pass<WK, WN, MT, G>(acc, ngroups, red, wk, wn, lane, store);
    }
}

#define MX8_ARGS MX_PARAMS(, uint8_t, uint8_t)

#define MX8_KERNEL(G, GATED, F16, NAME)                                                               \
    extern "C" __global__ void __launch_bounds__(32 * MX_WN * MX_WK, MX_MIN_BLOCKS(G)) NAME(MX8_ARGS) { \
        mx_w4a8_body<G, GATED, F16>(MX_PASS);                                                         \
    }

MX8_KERNEL(1, true, false, mx_w4a8_g1_gated)
MX8_KERNEL(2, true, false, mx_w4a8_g2_gated)
MX8_KERNEL(4, true, false, mx_w4a8_g4_gated)
MX8_KERNEL(1, false, false, mx_w4a8_g1_down)
MX8_KERNEL(2, false, false, mx_w4a8_g2_down)
MX8_KERNEL(4, false, false, mx_w4a8_g4_down)
MX8_KERNEL(1, true, true, mx_w4a8_g1_gated_f16)
MX8_KERNEL(2, true, true, mx_w4a8_g2_gated_f16)
MX8_KERNEL(4, true, true, mx_w4a8_g4_gated_f16)
MX8_KERNEL(1, false, true, mx_w4a8_g1_down_f16)
MX8_KERNEL(2, false, true, mx_w4a8_g2_down_f16)
MX8_KERNEL(4, false, true, mx_w4a8_g4_down_f16)
