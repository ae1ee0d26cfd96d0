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
// Rows: as mx_mma.cu, but grid x = groups of NWG * 4 tiles and grid y = the j-th expert with rows (plus
// the foreign rows), so that an expert's CTAs run together and share its activation rows through L2.
// The epilogue is store_tile (bias, SwiGLU or routing weight, bf16 out).
//
// Warp roles: NWG consumer warpgroups (unpack, MMA, epilogue) and PW producer warps that copy each
// chunk (every token row's 64 K of activations, every consumer warp's weights and scales) into one of S
// shared-memory stages with cp.async. The stages hand over through mbarriers: "full" completes when the
// producers' copies have landed, "empty" when every consumer warp's MMAs on the stage are done. No
// block-wide barrier in the loop: each warpgroup waits only for its data, the producer runs up to S
// chunks ahead (across passes too, so the next pass's loads overlap this pass's epilogue).

#define MX_FLAGS 2
#include "mx_common.cuh"

#ifndef WG_NWG
#define WG_NWG 2      // consumer warpgroups per CTA, 64 weight rows each
#endif
#ifndef WG_BT
#define WG_BT 128     // token rows per pass at most (the widest wgmma N)
#endif
#ifndef WG_S
#define WG_S 4        // shared-memory stages (chunks of 64 K)
#endif
#ifndef WG_MINB
#define WG_MINB 1     // CTAs per SM the register allocation aims at
#endif
#ifndef WG_PW
#define WG_PW 4       // producer warps (one warp alone issues too slowly to keep two warpgroups fed)
#endif

constexpr int WG_CWARPS = WG_NWG * 4;                    // consumer warps, one 16-row tile each
constexpr int WG_PTHREADS = WG_PW * 32;                  // producer threads
constexpr int WG_THREADS = WG_CWARPS * 32 + WG_PTHREADS;
constexpr int WG_ACC = WG_BT / 2;                        // fp32 sums per thread at the widest pass
constexpr int WG_ACT_BYTES = WG_BT * 128;                // a stage's activations: BT rows x 64 bf16
constexpr int WG_W_BYTES = WG_CWARPS * 512;              // every consumer warp's 16 rows x 64 K of E2M1
constexpr int WG_S_BYTES = WG_CWARPS * 128;              // and their scales
// stages start on 1024-byte boundaries (the 128-byte swizzle repeats every 8 rows of 128 bytes); the
// mbarriers (full, then empty, 8 bytes each) follow the stages
constexpr int WG_STAGE_BYTES = (WG_ACT_BYTES + WG_W_BYTES + WG_S_BYTES + 1023) / 1024 * 1024;
constexpr int WG_ROW_STEP = WG_PTHREADS / 8;              // 8 producer threads copy a row's 128 bytes
constexpr int WG_ROWS_PER_LANE = WG_BT / WG_ROW_STEP;    // a producer thread's activation rows
static_assert(WG_BT % 16 == 0 && WG_BT <= 128, "BT: a multiple of 16, at most 128");
static_assert(16 % WG_ROW_STEP == 0 && WG_CWARPS % WG_PW == 0, "PW: 1, 2 or 4, dividing the consumer warps");
static_assert(WG_S >= 2, "two stages at least");

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

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    uint32_t done;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                     "selp.u32 %0, 1, 0, p;\n}" : "=r"(done) : "r"(bar), "r"(parity) : "memory");
    } while (!done);
}

__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(bar) : "memory");
}

// the mbarrier counts one arrival when this thread's earlier cp.async copies have landed
__device__ __forceinline__ void cp_async_arrive(uint32_t bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" :: "r"(bar) : "memory");
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(dst), "l"(src) : "memory");
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

// the token rows of a pass: the smallest wgmma N that holds what is left of the expert
__device__ __forceinline__ int wg_pass_rows(int rem) {
    return (WG_BT >= 128 && rem > 64) ? 128 : (WG_BT >= 64 && rem > 32) ? 64 : rem > 16 ? 32 : 16;
}

// The producer warps: every chunk of every pass into stage it % S, after the consumers freed it.
__device__ __forceinline__ void wg_producer(
    uint32_t smem0, uint32_t bar_full, uint32_t bar_empty, const ExpertRows& er, const uint16_t* __restrict__ a,
    long long a_stride, int a_div, const uint4* __restrict__ w, const uint4* __restrict__ s4,
    const int* __restrict__ sorted_ids, int nv, int Kc, int Nt) {
    const int pt = threadIdx.x - WG_CWARPS * 32;        // producer thread 0 .. PW * 32 - 1
    const int lane = pt & 31, pw = pt >> 5;
    // activations: this thread copies 16-byte piece c of rows row0 + ROW_STEP * j
    const int c = pt & 7, row0 = pt >> 3;
    // weights: the tiles of consumer warps pw, pw + PW, ... (a tile past the last streams the first one
    // again); scales: 16-byte pieces pt, pt + PW * 32, ... of the CTA's 8 per tile
    constexpr int WT = WG_CWARPS / WG_PW, SP = (WG_CWARPS * 8 + WG_PTHREADS - 1) / WG_PTHREADS;
    const uint4* wsrc[WT];
#pragma unroll
    for (int i = 0; i < WT; ++i) {
        const int tl = blockIdx.x * WG_CWARPS + pw + WG_PW * i;
        wsrc[i] = w + ((long long)er.expert * Nt + (tl < Nt ? tl : 0)) * Kc * 32 + lane;
    }
    const uint4* ssrc[SP];
#pragma unroll
    for (int i = 0; i < SP; ++i) {
        const int pc = pt + WG_PTHREADS * i, tl = blockIdx.x * WG_CWARPS + (pc >> 3);
        ssrc[i] = s4 + ((long long)er.expert * Nt + (tl < Nt ? tl : 0)) * Kc * 8 + (pc & 7);
    }
    int it = 0;
    for (int p0 = 0; p0 < er.count;) {
        const int n = wg_pass_rows(er.count - p0);
        const uint16_t* arow[WG_ROWS_PER_LANE];
#pragma unroll
        for (int j = 0; j < WG_ROWS_PER_LANE; ++j) {
            const int row = row0 + WG_ROW_STEP * j, idx = p0 + row;
            const int slot = (row < n && idx < er.count) ? sorted_ids[er.start + idx] : nv;
            arow[j] = a + (long long)(slot < nv ? slot / a_div : 0) * a_stride + 8 * c;
        }
        for (int ci = 0; ci < Kc; ++ci, ++it) {
            const int st = it % WG_S, k = it / WG_S;
            if (k > 0) mbar_wait(bar_empty + 8 * st, (k - 1) & 1);
            const uint32_t sb = smem0 + st * WG_STAGE_BYTES;
#pragma unroll
            for (int j = 0; j < WG_ROWS_PER_LANE; ++j) {
                const int row = row0 + WG_ROW_STEP * j;
                if (WG_ROW_STEP * j < n) cp_async16(sb + row * 128 + ((c ^ (row & 7)) << 4), arow[j] + ci * 64);
            }
#pragma unroll
            for (int i = 0; i < WT; ++i)
                cp_async16(sb + WG_ACT_BYTES + (pw + WG_PW * i) * 512 + lane * 16, wsrc[i] + ci * 32);
#pragma unroll
            for (int i = 0; i < SP; ++i) {
                const int pc = pt + WG_PTHREADS * i;
                if (pc < WG_CWARPS * 8) cp_async16(sb + WG_ACT_BYTES + WG_W_BYTES + pc * 16, ssrc[i] + ci * 8);
            }
            cp_async_arrive(bar_full + 8 * st);
        }
        p0 += n;
    }
}

// One consumer pass: token rows p0 .. p0 + N - 1 of the expert (those past its count were read as row 0
// and are not stored) against the warpgroup's 64 weight rows, over all Kc chunks; then the epilogue.
template <int N, bool GATED, bool BIG>
__device__ __forceinline__ void wg_consume(
    int p0, int& it, uint32_t smem0, uint32_t bar_full, uint32_t bar_empty, const ExpertRows& er, int tile,
    bool tile_ok, int a_div, const float* __restrict__ a_scale, const float* __restrict__ bias,
    long long bias_stride, int up_off, uint16_t* __restrict__ out, long long out_stride,
    const float* __restrict__ topk_w, const int* __restrict__ sorted_ids, int nv, int n_out, int Kc) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int r = lane >> 2, q = lane & 3;
    float acc[WG_ACC];
#pragma unroll
    for (int i = 0; i < WG_ACC; ++i) acc[i] = 0.f;
    const uint32_t wread = WG_ACT_BYTES + warp * 512 + lane * 16;
    const uint32_t sread = WG_ACT_BYTES + WG_W_BYTES + warp * 128 + lane * 4;
    for (int ci = 0; ci < Kc; ++ci, ++it) {
        const int st = it % WG_S;
        mbar_wait(bar_full + 8 * st, (it / WG_S) & 1);
        // the copies landed through the generic proxy; the MMAs read through the async one
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        const uint32_t sb = smem0 + st * WG_STAGE_BYTES;
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
        __syncwarp();
        if (lane == 0) mbar_arrive(bar_empty + 8 * st);   // this warp is done with the stage
    }
    if (tile_ok) {
#pragma unroll
        for (int j = 0; j < N / 8; ++j) {
            const float v[4] = {acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3]};
            store_tile<GATED, false>(v, tile, p0 / 8 + j, er, r, q, sorted_ids, nv, a_div, a_scale, bias,
                                     bias_stride, up_off, topk_w, out, out_stride, n_out);
        }
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
    const uint32_t bar_full = smem0 + WG_S * WG_STAGE_BYTES, bar_empty = bar_full + 8 * WG_S;

    const ExpertRows er = find_rows<false, true>(counts, num_experts, nv, block_m, has_foreign != 0);
    if (er.expert < 0) return;
    if (er.expert == num_experts) {
        zero_foreign_rows<GATED, WG_CWARPS, 1, true>(er, sorted_ids, out, out_stride, n_out, nv);
        return;
    }
    if (threadIdx.x == 0) {
        for (int st = 0; st < WG_S; ++st) {
            mbar_init(bar_full + 8 * st, WG_PTHREADS);  // every producer thread, when its copies land
            mbar_init(bar_empty + 8 * st, WG_CWARPS);  // every consumer warp
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    const int warp = threadIdx.x >> 5;
    if (warp >= WG_CWARPS) {
        wg_producer(smem0, bar_full, bar_empty, er, a, a_stride, a_div, w, reinterpret_cast<const uint4*>(ws),
                    sorted_ids, nv, Kc, Nt);
        return;
    }
    const int tile = blockIdx.x * WG_CWARPS + warp;
    const bool tile_ok = tile < Nt;
    int it = 0;
    for (int p0 = 0; p0 < er.count;) {
        const int n = wg_pass_rows(er.count - p0);
#define WG_PASS(NN) wg_consume<NN, GATED, BIG>(p0, it, smem0, bar_full, bar_empty, er, tile, tile_ok, a_div, a_scale, \
                                               bias, bias_stride, up_off, out, out_stride, topk_w, sorted_ids, nv, \
                                               n_out, Kc)
        if constexpr (WG_BT >= 128) {
            if (n == 128) WG_PASS(128);
        }
        if constexpr (WG_BT >= 64) {
            if (n == 64) WG_PASS(64);
        }
        if constexpr (WG_BT >= 32) {
            if (n == 32) WG_PASS(32);
        }
        if (n == 16) WG_PASS(16);
#undef WG_PASS
        p0 += n;
    }
}

#define WG_ARGS                                                                                       \
    const uint16_t *a, long long a_stride, int a_div, const float *a_scale, const uint4 *w,           \
        const uint16_t *ws,                                                                           \
        const float *bias, long long bias_stride, int up_off, uint16_t *out, long long out_stride,    \
        const float *topk_w, const int *sorted_ids, const int *counts, int num_experts, int nv,       \
        int block_m, int has_foreign, int n_out, int K, int Kc, int Nt
#define WG_PASS_ARGS                                                                                  \
    a, a_stride, a_div, a_scale, w, ws, bias, bias_stride, up_off, out, out_stride, topk_w, sorted_ids, counts, \
        num_experts, nv, block_m, has_foreign, n_out, K, Kc, Nt

#define WG_KERNEL(GATED, BIG, NAME)                                                                   \
    extern "C" __global__ void __launch_bounds__(WG_THREADS, WG_MINB) NAME(WG_ARGS) {                 \
        mx_wg_body<GATED, BIG>(WG_PASS_ARGS);                                                         \
    }

WG_KERNEL(true, false, mx_wg_gated)
WG_KERNEL(false, false, mx_wg_down)
WG_KERNEL(true, true, mx_wg_gated_big)
WG_KERNEL(false, true, mx_wg_down_big)
