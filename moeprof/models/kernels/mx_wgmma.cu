// MXFP4 (E2M1 weights, E8M0 scale per 32 K) x BF16 activations at prefill: the expert GEMMs of one MoE
// layer on sm_90a warpgroup MMAs (wgmma, bf16 in, fp32 accumulate), the weights unpacked once per
// token tile straight into the MMA's register operand.
//
// Why: with many tokens per expert a GEMM is compute work, and Hopper has no FP4 MMA. Dequantizing the
// weights to bf16 in memory first (the other prefill path) writes and re-reads four times the packed
// bytes on every call. Here each warp unpacks its 16 weight rows with the decode kernel's few integer
// ops (mx_common.cuh: unpack_word) into the A registers of `wgmma ... m64nNk16` and the warpgroup
// multiplies them with up to 128 token rows held in shared memory: the unpack is paid once per 16 x N
// outputs, and the packed weights are the only weight bytes read.
//
// Swapped operands: the weight rows are the MMA's M side (64 per warpgroup, 16 per warp), the tokens its
// N side (a pass covers N = 16, 32, 64 or 128 of an expert's rows, the smallest that holds what is
// left), so an expert with few rows wastes at most 15 MMA columns.
//
// Operand layouts (quant.wg_mx_weights):
//   weights  w [E, Nt, Kc, 32 lanes] x 16 bytes, tiles of 16 rows (gated: rows 0-7 gate, 8-15 the
//            matching up rows, as in mx_mma.cu), Kc chunks of 64 K. Lane L = 4 r + q holds rows r and
//            r + 8; word s (MMA step s, K 16 s .. 16 s + 15 of the chunk) holds K 16 s + 2 q, + 1 and
//            16 s + 2 q + 8, + 9 in the "lanes" bit slots: the A fragment of PTX's m16n8k16 / wgmma
//            m64nNk16 in the natural K order, so the activations sit in shared memory as they are in
//            global memory (token rows of 64 K, 128-byte swizzled).
//   scales   s [E, Nt, Kc, 32 lanes] x 4 bytes: E8M0 of (row r, group 0), (r + 8, group 0), (r, group 1),
//            (r + 8, group 1) of the chunk (steps 0-1 are group 0, steps 2-3 group 1).
// Rows as mx_mma.cu; the grid is swapped: x = groups of NWG * 4 tiles, y = the j-th expert with rows
// (plus the foreign rows), so that an expert's CTAs run together and share its activation rows in L2.
// The epilogue is store_tile (bias, SwiGLU or routing weight, bf16 out).
//
// Pipeline: S stages, each holding one chunk's activation tile (N x 64 bf16) and every warp's weights and
// scales, filled by cp.async from all threads; per chunk a block barrier, the refill of the stage the
// previous chunk used, the unpack, four wgmma steps and a wait for them. Two CTAs per SM (127 registers)
// keep four warpgroups resident, so one CTA's MMAs run while the other waits at its barrier or unpacks.
// (A warp-specialized form, producer warps handing stages to the warpgroups through mbarriers, fits one
// CTA per SM in the register file and measured 1.4-2.0x slower; copies running on through the chunks of
// the next pass, so that they load during the epilogue, measured 1.15-1.2x slower: docs/performance.md,
// runs 51-54.)

// The e4m3 forms (mxfp4-w4a8; wg_pass F8 = 1 / 2): wgmma m64nNk32 .e4m3 with the activations' e4m3 bytes
// as the row quantizer wrote them (64-byte rows per chunk, 64-byte swizzle) and the weights unpacked into
// e4m3 register operands, one k32 MMA per MX group. The group's E8M0 scale is either kept out of the
// operand, the sums rescaled between groups (F8 = 1, mx_wg8: weights as the W4A8 decode kernel places them,
// quant.wg8_mx_weights), or put into it through a table of the 8 magnitudes times the group's power of two
// relative to the row (F8 = 2, mx_wg8l: lut_word, quant.wg8_lut_mx_weights), which needs no rescaling and
// unpacks the next chunk while the current chunk's MMAs run at 128-row passes (docs/performance.md,
// runs 58-64).

#define MX_FLAGS 2
#include <type_traits>
#include "mx_common.cuh"

#ifndef WG_NWG
#define WG_NWG 2      // warpgroups per CTA, 64 weight rows each
#endif
#ifndef WG_BT
#define WG_BT 128     // token rows per pass at most (the widest wgmma N)
#endif
#ifndef WG_S
#define WG_S 4        // pipeline stages (chunks of 64 K)
#endif
#ifndef WG_MINB
#define WG_MINB 2     // CTAs per SM the register allocation aims at
#endif
#ifndef WG_INFLIGHT
#define WG_INFLIGHT 0 // 1: the e4m3 table kernel leaves a chunk's MMAs in flight into the next chunk
#endif

constexpr int WG_WARPS = WG_NWG * 4;
constexpr int WG_THREADS = WG_WARPS * 32;
constexpr int WG_ACC = WG_BT / 2;                       // fp32 sums per thread at the widest pass
constexpr int WG_W_BYTES = WG_WARPS * 512;              // every warp's 16 rows x 64 K of E2M1
// A stage per activation format (F8: e4m3 bytes): BT token rows of one chunk (64 K: 128 bytes of bf16,
// 64 of e4m3), every warp's weights and their scales (bf16: 4 bytes per lane, e4m3: 4 per row pair);
// stages start on 1024-byte boundaries (a swizzle pattern repeats every 8 rows)
template <bool F8>
struct WgStage {
    static constexpr int ROW_BYTES = F8 ? 64 : 128;
    static constexpr int PIECES = ROW_BYTES / 16;       // 16-byte copies per token row
    static constexpr int ACT_BYTES = WG_BT * ROW_BYTES;
    static constexpr int S_BYTES = WG_WARPS * (F8 ? 32 : 128);
    static constexpr int BYTES = (ACT_BYTES + WG_W_BYTES + S_BYTES + 1023) / 1024 * 1024;
};
static_assert(WG_BT == 32 || WG_BT == 64 || WG_BT == 128, "BT: 32, 64 or 128");
static_assert(WG_THREADS % 8 == 0 && (WG_BT * 8) % WG_THREADS == 0, "whole rounds of 16-byte copies");
static_assert(WG_S >= 2, "two stages at least");
// chunks loaded ahead of the one computed (one stage fewer when a chunk's MMAs may still read its stage)
constexpr int WG_AHEAD = WG_S - 1 - WG_INFLIGHT;
static_assert(!WG_INFLIGHT || WG_S >= 4, "MMAs in flight: four stages at least");

// shared memory matrix descriptor of a K-major operand tile: start address, leading byte offset 16 (unused
// by these layouts), the stride between groups of 8 rows and the swizzle: bf16 rows of 128 bytes with the
// 128-byte swizzle (stride 1024), e4m3 rows of 64 bytes with the 64-byte swizzle (stride 512)
template <bool F8 = false>
__device__ __forceinline__ uint64_t wg_desc(uint32_t saddr) {
    if constexpr (F8)
        return (uint64_t)((saddr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(512 >> 4) << 32) |
               ((uint64_t)2 << 62);
    return (uint64_t)((saddr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) |
           ((uint64_t)1 << 62);
}

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }

// keeps the compiler from moving the accumulators across the asynchronous MMAs
template <int NA>
__device__ __forceinline__ void wg_fence_acc(float (&d)[WG_ACC]) {
#pragma unroll
    for (int i = 0; i < NA; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// wgmma m64nNk16 (bf16) / m64nNk32 (e4m3) -> fp32, A from registers, B a K-major shared memory tile.
// Per N: the accumulators d[0 .. N/2 - 1] as operands, and the PTX operand list: their placeholders, A's four
// registers, the descriptor; the scale-d predicate's placeholder follows (scale-d 0: D = A * B, else D += A * B).
#define WG_D8(i)                                                                                      \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]),      \
        "+f"(d[i + 6]), "+f"(d[i + 7])
#define WG_D16 WG_D8(0)
#define WG_D32 WG_D16, WG_D8(8)
#define WG_D64 WG_D32, WG_D8(16), WG_D8(24)
#define WG_D128 WG_D64, WG_D8(32), WG_D8(40), WG_D8(48), WG_D8(56)
#define WG_OPS16 "{" \
    "%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12"
#define WG_PRED16 "%13"
#define WG_OPS32 "{" \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20"
#define WG_PRED32 "%21"
#define WG_OPS64 "{" \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36"
#define WG_PRED64 "%37"
#define WG_OPS128 "{" \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68"
#define WG_PRED128 "%69"
#define WG_MMA(SHAPE_TYPES, N, IMM, SCALE_D)                                                          \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " WG_PRED##N ", 0;\n"                               \
                 "wgmma.mma_async.sync.aligned." SHAPE_TYPES " " WG_OPS##N ", p, " IMM ";\n}\n"          \
                 : WG_D##N                                                                            \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(SCALE_D))

// bf16 x bf16, the sums accumulate
template <int N>
__device__ __forceinline__ void wgmma_step(float (&d)[WG_ACC], const uint32_t (&a)[4], uint64_t desc) {
    if constexpr (N == 16) WG_MMA("m64n16k16.f32.bf16.bf16", 16, "1, 1, 0", 1);
    else if constexpr (N == 32) WG_MMA("m64n32k16.f32.bf16.bf16", 32, "1, 1, 0", 1);
    else if constexpr (N == 64) WG_MMA("m64n64k16.f32.bf16.bf16", 64, "1, 1, 0", 1);
    else WG_MMA("m64n128k16.f32.bf16.bf16", 128, "1, 1, 0", 1);
}

// e4m3 x e4m3 (no transpose operands for 8-bit types); scale_d == 0 starts the sums over
template <int N>
__device__ __forceinline__ void wgmma8_step(float (&d)[WG_ACC], const uint32_t (&a)[4], uint64_t desc, int scale_d) {
    if constexpr (N == 16) WG_MMA("m64n16k32.f32.e4m3.e4m3", 16, "1, 1", scale_d);
    else if constexpr (N == 32) WG_MMA("m64n32k32.f32.e4m3.e4m3", 32, "1, 1", scale_d);
    else if constexpr (N == 64) WG_MMA("m64n64k32.f32.e4m3.e4m3", 64, "1, 1", scale_d);
    else WG_MMA("m64n128k32.f32.e4m3.e4m3", 128, "1, 1", scale_d);
}

__device__ __forceinline__ uint4 lds_v4(uint32_t addr) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
    return v;
}

__device__ __forceinline__ uint32_t lds_u32(uint32_t addr) {
    uint32_t v;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(addr));
    return v;
}

__device__ __forceinline__ uint32_t ld_u32_nc(const uint32_t* p) {
    uint32_t v;
    asm volatile("ld.global.nc.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}

// One word of 8 E2M1 codes in the table layout (quant.wg8_lut_mx_weights: codes 0-3 with their 3 magnitude
// bits in nibbles 0-3 and signs in bits 7, 15, 23, 31; codes 4-7 in nibbles 4-7, signs in bits 3, 11, 19,
// 27) and its (row, group) byte Q -> two registers of 4 e4m3 bytes, each code's value times 2^(Q - 5).
// The table: magnitudes 0, 0.5, 1, 1.5 (t0) and 2, 3, 4, 6 (t1) times 2^q as e4m3 bytes, all normal for
// -5 <= q <= 6 (exponent fields q + 6 .. q + 9, mantissa 0 or 4): one multiply-add each from Q; prmt
// picks a byte of the table per code, and the sign bit is or-ed in.
__device__ __forceinline__ void lut_word(uint32_t x, uint32_t Q, uint32_t& lo, uint32_t& hi) {
    // bytes (0, 0x30, 0x38, 0x3C) and (0x40, 0x44, 0x48, 0x4C) at q = 0; + 8 q in every exponent field
    const uint32_t t0 = Q * 0x08080800u + (0x3C383000u - 5u * 0x08080800u);
    const uint32_t t1 = Q * 0x08080808u + (0x4C484440u - 5u * 0x08080808u);
    uint32_t p_lo, p_hi;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(p_lo) : "r"(t0), "r"(t1), "r"(x & 0x7777u));
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(p_hi) : "r"(t0), "r"(t1), "r"((x >> 16) & 0x7777u));
    lo = p_lo | (x & 0x80808080u);
    hi = p_hi | ((x << 4) & 0x80808080u);
}

// the fp32 factor 2^(a - b) for two E8M0 bytes (|a - b| <= 126)
__device__ __forceinline__ float pow2_diff(uint32_t a, uint32_t b) { return __uint_as_float((a - b + 127u) << 23); }

// the sums of rows r (even pairs d[4 j], d[4 j + 1]) and r + 8 (d[4 j + 2], d[4 j + 3]) times f, f8
template <int NA>
__device__ __forceinline__ void wg_scale_rows(float (&d)[WG_ACC], float f, float f8) {
#pragma unroll
    for (int i = 0; i < NA; ++i) d[i] *= (i & 2) ? f8 : f;
}

// One pass: token rows p0 .. p0 + N - 1 of the expert (those past its count are read as row 0 and not
// stored) against the CTA's NWG * 64 weight rows, over all Kc chunks; then the epilogue.
// F8 (the W4A8 kernels): e4m3 activations and weights placed into e4m3 (E2M1 * 2^-6, mx_common.cuh
// unpack8_word), one k32 MMA per MX group. The group's E8M0 scale cannot ride in the e4m3 operand, so
// the sums are kept in units of the current group's scale: before group g they are multiplied by
// 2^(S[g-1] - S[g]) of their row (exact: powers of two), after the last by 2^(S - 121) (the layout's
// bytes are S + 6); the layer takes this path only where every row's bytes lie within WG8_SCALE_SPREAD of
// each other, so the sums stay far from fp32's range limits (quant.wg8_mx_weights).
template <int N, bool GATED, bool BIG, int F8>
__device__ __forceinline__ void wg_pass(
    int p0, uint32_t smem0, const ExpertRows& er, int tile, bool tile_ok,
    const uint16_t* __restrict__ a, long long a_stride, int a_div, const float* __restrict__ a_scale,
    const uint4* __restrict__ wsrc, const uint4* __restrict__ ssrc,
    const float* __restrict__ bias, long long bias_stride, int up_off,
    uint16_t* __restrict__ out, long long out_stride, const float* __restrict__ topk_w,
    const int* __restrict__ sorted_ids, int nv, int n_out, int Kc) {
    if constexpr (N > WG_BT) {
        return;   // never called (the caller's branch for it is constant false): no sums wider than WG_ACC
    } else {
        using G = WgStage<F8 != 0>;
        // e4m3 rows are bytes, bf16 rows 2-byte elements: a chunk of 64 K is 64 of either
        using AT = typename std::conditional<F8 != 0, uint8_t, uint16_t>::type;
        constexpr int ROWS_PER_ROUND = WG_THREADS / G::PIECES;
        constexpr int ROUNDS = (WG_BT + ROWS_PER_ROUND - 1) / ROWS_PER_ROUND;   // 16-byte copies per thread
        const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
        const int r = lane >> 2, q = lane & 3;
        // this thread's activation copies: 16-byte piece c of rows row0 + ROWS_PER_ROUND * i
        const int c = tid & (G::PIECES - 1), row0 = F8 ? tid >> 2 : tid >> 3;
        const AT* arow[ROUNDS];
        uint32_t adst[ROUNDS];
#pragma unroll
        for (int i = 0; i < ROUNDS; ++i) {
            const int row = row0 + ROWS_PER_ROUND * i;
            const int idx = p0 + row;
            const int slot = (row < N && idx < er.count) ? sorted_ids[er.start + idx] : nv;
            arow[i] = reinterpret_cast<const AT*>(a) + (long long)(slot < nv ? slot / a_div : 0) * a_stride +
                      (int)(16 / sizeof(AT)) * c;
            // 128-byte swizzle: piece c of row x at c ^ (x & 7); 64-byte: at c ^ ((x >> 1) & 3)
            adst[i] = F8 ? row * 64 + ((c ^ ((row >> 1) & 3)) << 4) : row * 128 + ((c ^ (row & 7)) << 4);
        }
        const uint32_t wdst = G::ACT_BYTES + warp * 512 + lane * 16;
        const uint32_t sdst = G::ACT_BYTES + WG_W_BYTES + warp * (F8 ? 32 : 128) + lane * 16;
        auto load = [&](int slot, int ci) {
            const uint32_t sb = smem0 + slot * G::BYTES;
#pragma unroll
            for (int i = 0; i < ROUNDS; ++i)
                if (row0 + ROWS_PER_ROUND * i < N)
                    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;"
                                 :: "r"(sb + adst[i]), "l"(arow[i] + ci * 64));
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(sb + wdst), "l"(wsrc + (long long)ci * 32));
            if (lane < (F8 ? 2 : 8))
                asm volatile("cp.async.cg.shared.global [%0], [%1], 16;"
                             :: "r"(sb + sdst), "l"(ssrc + (long long)ci * (F8 ? 2 : 8)));
        };
        // after chunk i's block barrier: the stage freed then takes chunk i + AHEAD, and a copy group is
        // committed either way (the waits count groups)
        auto refill = [&](int i) {
            const int nx = i + WG_AHEAD;
            if (nx < Kc) load(nx % WG_S, nx);
            cp_async_commit();
        };

        float acc[WG_ACC];
        if constexpr (!F8) {   // (F8: the first MMA of the pass starts the sums over)
#pragma unroll
            for (int i = 0; i < WG_ACC; ++i) acc[i] = 0.f;
        }

#pragma unroll
        for (int j = 0; j < WG_AHEAD; ++j) {
            if (j < Kc) load(j, j);
            cp_async_commit();
        }
        const uint32_t wread = G::ACT_BYTES + warp * 512 + lane * 16;
        const uint32_t sread = F8 ? G::ACT_BYTES + WG_W_BYTES + warp * 32 + r * 4
                                  : G::ACT_BYTES + WG_W_BYTES + warp * 128 + lane * 4;
        uint32_t s_prev = 0, s_prev8 = 0;   // F8: the scale bytes (S + 6) of rows r, r + 8 the sums are in
        // (the table form at the widest pass: measured faster there and slower at N <= 32, run 63)
        constexpr bool OVERLAP = F8 == 2 && N >= 128;
        if constexpr (OVERLAP) {
            // The table form unpacks chunk i + 1 while chunk i's MMAs run. A lane reads only the weights it
            // copied itself and the scale bytes lanes 0-1 of its warp copied, so its own wait for the copy
            // and a warp barrier make them readable before the block barrier of chunk i + 1 (which orders
            // the activations, copied by all threads). The A registers of chunk i stay live until its MMAs
            // are waited for, so the next chunk's unpack cannot take them.
            // (each (row, group) byte Q gives the table of its 8 magnitudes times 2^(Q - 5), lut_word)
            auto unpack = [&](int ci, uint32_t (&a0)[4], uint32_t (&a1)[4]) {
                cp_async_wait<WG_AHEAD - 1>();   // this thread's copies of chunk ci
                __syncwarp();
                const uint32_t sb = smem0 + (ci % WG_S) * G::BYTES;
                const uint4 wv = lds_v4(sb + wread);
                const uint32_t sv = lds_u32(sb + sread);
                lut_word(wv.x, sv & 0xFFu, a0[0], a0[2]);
                lut_word(wv.y, (sv >> 8) & 0xFFu, a0[1], a0[3]);
                lut_word(wv.z, (sv >> 16) & 0xFFu, a1[0], a1[2]);
                lut_word(wv.w, sv >> 24, a1[1], a1[3]);
            };
            // chunk i's two k32 MMAs (c1: + 32 bytes, K 32 .. 63 of the chunk) as one group
            auto issue = [&](int i, const uint32_t (&c0)[4], const uint32_t (&c1)[4]) {
                const uint64_t desc = wg_desc<true>(smem0 + (i % WG_S) * G::BYTES);
                wg_fence_acc<N / 2>(acc);
                wg_fence();
                wgmma8_step<N>(acc, c0, desc, i > 0);
                wgmma8_step<N>(acc, c1, desc + 2, 1);
                wg_commit();
            };
#if WG_INFLIGHT
            // Chunk i's MMAs are left in flight while the next chunk is set up: issued, then the wait is for
            // chunk i - 1's (so its A registers, the other of two sets, can take chunk i + 1's unpack), and
            // the stage refilled at chunk i is that of chunk i - 2, whose MMAs every warpgroup has retired
            // before the block barrier.
            uint32_t ra0[4], ra1[4], rb0[4], rb1[4];
            unpack(0, ra0, ra1);
            auto step = [&](int i, uint32_t (&c0)[4], uint32_t (&c1)[4], uint32_t (&n0)[4], uint32_t (&n1)[4]) {
                __syncthreads();
                refill(i);
                issue(i, c0, c1);
                asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory");   // chunk i - 1's MMAs
#pragma unroll
                for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(n0[j]), "+r"(n1[j])::"memory");
                if (i + 1 < Kc) unpack(i + 1, n0, n1);
            };
            for (int i = 0; i < Kc; i += 2) {
                step(i, ra0, ra1, rb0, rb1);
                if (i + 1 < Kc) step(i + 1, rb0, rb1, ra0, ra1);
            }
            wg_wait0();
            wg_fence_acc<N / 2>(acc);
#pragma unroll
            for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(ra0[j]), "+r"(ra1[j]), "+r"(rb0[j]), "+r"(rb1[j])::"memory");
#else
            uint32_t cur0[4], cur1[4];
            unpack(0, cur0, cur1);
            for (int i = 0; i < Kc; ++i) {
                // every thread waited for its copies of chunk i before arriving; all are done with chunk
                // i - 1, whose stage takes chunk i + AHEAD
                __syncthreads();
                refill(i);
                issue(i, cur0, cur1);
                uint32_t nxt0[4], nxt1[4];
                if (i + 1 < Kc) unpack(i + 1, nxt0, nxt1);
                wg_wait0();
                wg_fence_acc<N / 2>(acc);
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    asm volatile("" : "+r"(cur0[j]), "+r"(cur1[j])::"memory");
                    cur0[j] = nxt0[j];
                    cur1[j] = nxt1[j];
                }
            }
#endif
        }
        for (int i = 0; i < (OVERLAP ? 0 : Kc); ++i) {
            cp_async_wait<WG_AHEAD - 1>();
            // chunk i is in for every thread; every warpgroup is done with chunk i - 1, whose stage takes
            // chunk i + AHEAD
            __syncthreads();
            refill(i);
            const uint32_t sb = smem0 + (i % WG_S) * G::BYTES;
            const uint4 wv = lds_v4(sb + wread);
            const uint32_t sv = lds_u32(sb + sread);
            if constexpr (F8 == 1) {
                // words (group 0, row r), (0, r + 8), (1, r), (1, r + 8); scale bytes in the same order
                uint32_t af0[4], af1[4];
                unpack8_word(wv.x, af0[0], af0[2]);
                unpack8_word(wv.y, af0[1], af0[3]);
                unpack8_word(wv.z, af1[0], af1[2]);
                unpack8_word(wv.w, af1[1], af1[3]);
                const uint32_t e0 = sv & 0xFFu, e08 = (sv >> 8) & 0xFFu, e1 = (sv >> 16) & 0xFFu, e18 = sv >> 24;
                const uint64_t desc = wg_desc<true>(sb);
                if (i > 0) wg_scale_rows<N / 2>(acc, pow2_diff(s_prev, e0), pow2_diff(s_prev8, e08));
                wg_fence_acc<N / 2>(acc);
                wg_fence();
                wgmma8_step<N>(acc, af0, desc, i > 0);
                wg_commit();
                wg_wait0();
                wg_fence_acc<N / 2>(acc);
                wg_scale_rows<N / 2>(acc, pow2_diff(e0, e1), pow2_diff(e08, e18));
                wg_fence_acc<N / 2>(acc);
                wg_fence();
                wgmma8_step<N>(acc, af1, desc + 2, 1);   // + 32 bytes: K 32 .. 63 of the chunk
                wg_commit();
                wg_wait0();
                wg_fence_acc<N / 2>(acc);
                s_prev = e1;
                s_prev8 = e18;
            } else if constexpr (F8 == 2) {
                // each (row, group) byte Q gives the table of its 8 magnitudes times 2^(Q - 5) (lut_word)
                uint32_t af0[4], af1[4];
                lut_word(wv.x, sv & 0xFFu, af0[0], af0[2]);
                lut_word(wv.y, (sv >> 8) & 0xFFu, af0[1], af0[3]);
                lut_word(wv.z, (sv >> 16) & 0xFFu, af1[0], af1[2]);
                lut_word(wv.w, sv >> 24, af1[1], af1[3]);
                const uint64_t desc = wg_desc<true>(sb);
                wg_fence_acc<N / 2>(acc);
                wg_fence();
                wgmma8_step<N>(acc, af0, desc, i > 0);
                wgmma8_step<N>(acc, af1, desc + 2, 1);   // + 32 bytes: K 32 .. 63 of the chunk
                wg_commit();
                wg_wait0();
                wg_fence_acc<N / 2>(acc);
            } else {
                const uint32_t b0 = scale_word<BIG>(sv & 0xFFu), b08 = scale_word<BIG>((sv >> 8) & 0xFFu);
                const uint32_t b1 = scale_word<BIG>((sv >> 16) & 0xFFu), b18 = scale_word<BIG>(sv >> 24);
                uint32_t af[4][4];
                unpack_word<BIG>(wv.x, b0, b08, af[0]);
                unpack_word<BIG>(wv.y, b0, b08, af[1]);
                unpack_word<BIG>(wv.z, b1, b18, af[2]);
                unpack_word<BIG>(wv.w, b1, b18, af[3]);
                const uint64_t desc = wg_desc(sb);
                wg_fence_acc<N / 2>(acc);
                wg_fence();
#pragma unroll
                for (int s = 0; s < 4; ++s) wgmma_step<N>(acc, af[s], desc + 2 * s);   // + 32 bytes per 16 K
                wg_commit();
                wg_wait0();
                wg_fence_acc<N / 2>(acc);
            }
        }
        cp_async_wait<0>();

        if (tile_ok) {
            // F8 == 1: the last group's scale, 2^(S - 121) from the stored S + 6 (>= 6: a normal fp32);
            // F8 == 2: the rows' reference scale 2^(Sref - 127), bytes 0 / 1 of row r's word in the chunk
            // after the last (Sref >= 1)
            if constexpr (F8 == 2) {
                const uint32_t ref = ld_u32_nc(reinterpret_cast<const uint32_t*>(ssrc - (lane & 1)) + Kc * 8 + r);
                s_prev = ref & 0xFFu;
                s_prev8 = (ref >> 8) & 0xFFu;
            }
            const float f = F8 ? __uint_as_float(s_prev << 23) : 1.0f, f8 = F8 ? __uint_as_float(s_prev8 << 23) : 1.0f;
#pragma unroll
            for (int j = 0; j < N / 8; ++j) {
                float v[4] = {acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3]};
                if constexpr (F8) {
                    v[0] *= f; v[1] *= f; v[2] *= f8; v[3] *= f8;
                }
                store_tile<GATED, F8>(v, tile, p0 / 8 + j, er, r, q, sorted_ids, nv, a_div, a_scale, bias,
                                      bias_stride, up_off, topk_w, out, out_stride, n_out);
            }
        }
        __syncthreads();   // the next pass refills every stage
    }
}

template <bool GATED, bool BIG, int F8>
__device__ __forceinline__ void mx_wg_body(MX_PARAMS(__restrict__, uint16_t, uint16_t)) {
    extern __shared__ __align__(1024) unsigned char wg_smem[];
    const uint32_t smem0 = ((uint32_t)__cvta_generic_to_shared(wg_smem) + 1023u) & ~1023u;

    // grid x = tile groups, y = experts: the CTAs of one expert run together and share its activation rows
    // through L2
    const ExpertRows er = find_rows<false, true>(counts, num_experts, nv, block_m, has_foreign != 0);
    if (er.expert < 0) return;
    if (er.expert == num_experts) {
        zero_foreign_rows<GATED, WG_WARPS, 1, true>(er, sorted_ids, out, out_stride, n_out, nv);
        return;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int tile = blockIdx.x * WG_WARPS + warp;
    const bool tile_ok = tile < Nt;
    // a tile past the last streams the first one again (its sums are not stored)
    const long long tbase = (long long)er.expert * Nt + (tile_ok ? tile : 0);
    const uint4* wsrc = w + tbase * Kc * 32 + lane;
    // scales per tile and chunk: bf16 128 bytes, copied as 8 pieces of 16 by lanes 0-7; e4m3 32 bytes
    // (quant.wg8_mx_weights), by lanes 0-1
    const uint4* ssrc = F8 ? reinterpret_cast<const uint4*>(ws) + tbase * (Kc + (F8 == 2)) * 2 + (lane & 1)
                           : reinterpret_cast<const uint4*>(ws) + tbase * Kc * 8 + (lane & 7);
    for (int p0 = 0; p0 < er.count;) {
        const int rem = er.count - p0;
#define WG_PASS(NN) wg_pass<NN, GATED, BIG, F8>(p0, smem0, er, tile, tile_ok, a, a_stride, a_div, a_scale, wsrc, \
                                                 ssrc, bias, bias_stride, up_off, out, out_stride, topk_w, \
                                                 sorted_ids, nv, n_out, Kc)
        if (WG_BT >= 128 && rem > 64) { WG_PASS(128); p0 += 128; }
        else if (WG_BT >= 64 && rem > 32) { WG_PASS(64); p0 += 64; }
        else if (rem > 16) { WG_PASS(32); p0 += 32; }
        else { WG_PASS(16); p0 += 16; }
#undef WG_PASS
    }
}

#define WG_KERNEL(GATED, BIG, F8, NAME)                                                               \
    extern "C" __global__ void __launch_bounds__(WG_THREADS, WG_MINB) NAME(MX_ARGS) {                 \
        mx_wg_body<GATED, BIG, F8>(MX_PASS);                                                          \
    }

WG_KERNEL(true, false, 0, mx_wg_gated)
WG_KERNEL(false, false, 0, mx_wg_down)
WG_KERNEL(true, true, 0, mx_wg_gated_big)
WG_KERNEL(false, true, 0, mx_wg_down_big)
// W4A8: e4m3 activations (`a` read as bytes, a_stride in bytes); the sums rescaled per MX group (weights
// and scales of quant.wg8_mx_weights) or the group's scale in the operand (quant.wg8_lut_mx_weights)
WG_KERNEL(true, false, 1, mx_wg8_gated)
WG_KERNEL(false, false, 1, mx_wg8_down)
WG_KERNEL(true, false, 2, mx_wg8l_gated)
WG_KERNEL(false, false, 2, mx_wg8l_down)
