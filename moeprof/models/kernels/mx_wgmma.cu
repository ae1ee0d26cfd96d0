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

#define MX_FLAGS 2
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

constexpr int WG_WARPS = WG_NWG * 4;
constexpr int WG_THREADS = WG_WARPS * 32;
constexpr int WG_ACC = WG_BT / 2;                       // fp32 sums per thread at the widest pass
constexpr int WG_ACT_BYTES = WG_BT * 128;               // a stage's activations: BT rows x 64 bf16
constexpr int WG_W_BYTES = WG_WARPS * 512;              // every warp's 16 rows x 64 K of E2M1
constexpr int WG_S_BYTES = WG_WARPS * 128;              // and their scales
// stages start on 1024-byte boundaries (the 128-byte swizzle repeats every 8 rows of 128 bytes)
constexpr int WG_STAGE_BYTES = (WG_ACT_BYTES + WG_W_BYTES + WG_S_BYTES + 1023) / 1024 * 1024;
static_assert(WG_BT == 32 || WG_BT == 64 || WG_BT == 128, "BT: 32, 64 or 128");
static_assert(WG_THREADS % 8 == 0 && (WG_BT * 8) % WG_THREADS == 0, "whole rounds of 16-byte copies");
static_assert(WG_S >= 2, "two stages at least");
constexpr int WG_AHEAD = WG_S - 1;                      // chunks loaded ahead of the one computed

// shared memory matrix descriptor of a K-major operand tile with the 128-byte swizzle: start address,
// leading byte offset 16 (unused by this layout), stride 1024 bytes between groups of 8 rows
__device__ __forceinline__ uint64_t wg_desc(uint32_t saddr) {
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

// wgmma m64nNk16, bf16 x bf16 -> fp32, A from registers, B a K-major shared memory tile
__device__ __forceinline__ void wgmma_n16(float (&d)[WG_ACC], const uint32_t (&a)[4], uint64_t desc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
        "{"
        "%0, %1, %2, %3, %4, %5, %6, %7"
        "}, {%8, %9, %10, %11}, %12, p, 1, 1, 0;\n}\n"
        :
          "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}

__device__ __forceinline__ void wgmma_n32(float (&d)[WG_ACC], const uint32_t (&a)[4], uint64_t desc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
        "{"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
        "}, {%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}\n"
        :
          "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}

__device__ __forceinline__ void wgmma_n64(float (&d)[WG_ACC], const uint32_t (&a)[4], uint64_t desc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
        "}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
        :
          "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}

__device__ __forceinline__ void wgmma_n128(float (&d)[WG_ACC], const uint32_t (&a)[4], uint64_t desc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
        :
          "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}

template <int N>
__device__ __forceinline__ void wgmma_step(float (&d)[WG_ACC], const uint32_t (&a)[4], uint64_t desc) {
    if constexpr (N == 16) wgmma_n16(d, a, desc);
    else if constexpr (N == 32) wgmma_n32(d, a, desc);
    else if constexpr (N == 64) wgmma_n64(d, a, desc);
    else wgmma_n128(d, a, desc);
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

// One pass: token rows p0 .. p0 + N - 1 of the expert (those past its count are read as row 0 and not
// stored) against the CTA's NWG * 64 weight rows, over all Kc chunks; then the epilogue.
template <int N, bool GATED, bool BIG>
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
        constexpr int ROUNDS = WG_BT * 8 / WG_THREADS;   // 16-byte activation copies per thread and chunk
        constexpr int ROWS_PER_ROUND = WG_THREADS / 8;
        const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
        const int r = lane >> 2, q = lane & 3;
        // this thread's activation copies: 16-byte piece c of rows row0 + ROWS_PER_ROUND * i
        const int c = tid & 7, row0 = tid >> 3;
        const uint16_t* arow[ROUNDS];
        uint32_t adst[ROUNDS];
#pragma unroll
        for (int i = 0; i < ROUNDS; ++i) {
            const int row = row0 + ROWS_PER_ROUND * i;
            const int idx = p0 + row;
            const int slot = (row < N && idx < er.count) ? sorted_ids[er.start + idx] : nv;
            arow[i] = a + (long long)(slot < nv ? slot / a_div : 0) * a_stride + 8 * c;
            adst[i] = row * 128 + ((c ^ (row & 7)) << 4);
        }
        const uint32_t wdst = WG_ACT_BYTES + warp * 512 + lane * 16;
        const uint32_t sdst = WG_ACT_BYTES + WG_W_BYTES + warp * 128 + lane * 16;
        auto load = [&](int slot, int ci) {
            const uint32_t sb = smem0 + slot * WG_STAGE_BYTES;
#pragma unroll
            for (int i = 0; i < ROUNDS; ++i)
                if (row0 + ROWS_PER_ROUND * i < N)
                    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;"
                                 :: "r"(sb + adst[i]), "l"(arow[i] + ci * 64));
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(sb + wdst), "l"(wsrc + (long long)ci * 32));
            if (lane < 8)
                asm volatile("cp.async.cg.shared.global [%0], [%1], 16;"
                             :: "r"(sb + sdst), "l"(ssrc + (long long)ci * 8));
        };

        float acc[WG_ACC];
#pragma unroll
        for (int i = 0; i < WG_ACC; ++i) acc[i] = 0.f;

#pragma unroll
        for (int j = 0; j < WG_AHEAD; ++j) {
            if (j < Kc) load(j, j);
            cp_async_commit();
        }
        const uint32_t wread = WG_ACT_BYTES + warp * 512 + lane * 16;
        const uint32_t sread = WG_ACT_BYTES + WG_W_BYTES + warp * 128 + lane * 4;
        for (int i = 0; i < Kc; ++i) {
            cp_async_wait<WG_AHEAD - 1>();
            // chunk i is in for every thread; every warpgroup is done with chunk i - 1, whose stage takes
            // chunk i + AHEAD
            __syncthreads();
            {
                const int nx = i + WG_AHEAD;
                if (nx < Kc) load(nx % WG_S, nx);
                cp_async_commit();
            }
            const uint32_t sb = smem0 + (i % WG_S) * WG_STAGE_BYTES;
            const uint4 wv = lds_v4(sb + wread);
            const uint32_t sv = lds_u32(sb + sread);
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
        cp_async_wait<0>();

        if (tile_ok) {
#pragma unroll
            for (int j = 0; j < N / 8; ++j) {
                const float v[4] = {acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3]};
                store_tile<GATED, false>(v, tile, p0 / 8 + j, er, r, q, sorted_ids, nv, a_div, a_scale, bias,
                                         bias_stride, up_off, topk_w, out, out_stride, n_out);
            }
        }
        __syncthreads();   // the next pass refills every stage
    }
}

template <bool GATED, bool BIG>
__device__ __forceinline__ void mx_wg_body(
    const uint16_t* __restrict__ a, long long a_stride, int a_div, const float* __restrict__ a_scale,
    const uint4* __restrict__ w, const uint16_t* __restrict__ ws,
    const float* __restrict__ bias, long long bias_stride, int up_off,
    uint16_t* __restrict__ out, long long out_stride, const float* __restrict__ topk_w,
    const int* __restrict__ sorted_ids, const int* __restrict__ counts, int num_experts, int nv,
    int block_m, int has_foreign, int n_out, int K, int Kc, int Nt) {
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
    // scales: 128 bytes per tile and chunk, copied as 8 pieces of 16 by lanes 0-7
    const uint4* ssrc = reinterpret_cast<const uint4*>(ws) + tbase * Kc * 8 + (lane & 7);
    for (int p0 = 0; p0 < er.count;) {
        const int rem = er.count - p0;
#define WG_PASS(NN) wg_pass<NN, GATED, BIG>(p0, smem0, er, tile, tile_ok, a, a_stride, a_div, a_scale, wsrc, ssrc, \
                                            bias, bias_stride, up_off, out, out_stride, topk_w, sorted_ids, nv, \
                                            n_out, Kc)
        if (WG_BT >= 128 && rem > 64) { WG_PASS(128); p0 += 128; }
        else if (WG_BT >= 64 && rem > 32) { WG_PASS(64); p0 += 64; }
        else if (rem > 16) { WG_PASS(32); p0 += 32; }
        else { WG_PASS(16); p0 += 16; }
#undef WG_PASS
    }
}

#define WG_KERNEL(GATED, BIG, NAME)                                                                   \
    extern "C" __global__ void __launch_bounds__(WG_THREADS, WG_MINB) NAME(MX_ARGS) {                 \
        mx_wg_body<GATED, BIG>(MX_PASS);                                                              \
    }

WG_KERNEL(true, false, mx_wg_gated)
WG_KERNEL(false, false, mx_wg_down)
WG_KERNEL(true, true, mx_wg_gated_big)
WG_KERNEL(false, true, mx_wg_down_big)
