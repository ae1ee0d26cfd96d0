// Helpers shared by the CUDA MXFP4 kernels (mx_mma.cu: mma.sync at decode; mx_wgmma.cu: warpgroup MMAs
// at prefill): the E2M1 unpack into bf16 and e4m3 MMA operand registers, the expert-row scan and the
// epilogue.
// The includer defines MX_FLAGS first (option bit 4 changes scale_word).

#pragma once
#include <stdint.h>

#define SWIGLU_ALPHA 1.702f
#define SWIGLU_LIMIT 7.0f
#define MAX_EXPERTS 256

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" :: "n"(N)); }

__device__ __forceinline__ uint4 ld_v4(const void* p) {
    uint4 v;
    asm volatile("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

__device__ __forceinline__ uint32_t mul_bf16x2(uint32_t a, uint32_t b) {
    uint32_t d;
    asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
}

// E8M0 byte -> bf16x2 factor to multiply "E2M1 * 2^-126" by: 2^(S-1) = bf16 bits (S + 126) << 7,
// exact for S <= 128. BIG: the second factor of a two-step multiply (first by 2^126): 2^(S-127) =
// bits S << 7 (S = 0: the subnormal 2^-127).
template <bool BIG>
__device__ __forceinline__ uint32_t scale_word(uint32_t s) {
    if (BIG) {
        const uint32_t h = s ? (s << 7) : 0x0040u;
        return h | (h << 16);
    }
    // (S + 126) << 7 in both halves as one multiply-add (S + 126 <= 255: no carry between halves)
    if (MX_FLAGS & 4) return s * 0x00800080u + 0x3F003F00u;
    const uint32_t h = (s + 126u) << 7;
    return h | (h << 16);
}

// one 32-bit word in the "lanes" layout -> the four A-operand registers of one MMA step
template <bool BIG>
__device__ __forceinline__ void unpack_word(uint32_t x, uint32_t br, uint32_t br8, uint32_t a[4]) {
    const uint32_t M = 0x81C081C0u;
    uint32_t ta = x & M;
    uint32_t tb = (x << 3) & M;
    uint32_t tc = (x << 6) & M;
    uint32_t td = ((x >> 4) & 0x00C000C0u) | ((x >> 5) & 0x01000100u) | ((x << 1) & 0x80008000u);
    if (BIG) {
        const uint32_t P = 0x7E807E80u;  // 2^126 in both halves
        ta = mul_bf16x2(ta, P); tb = mul_bf16x2(tb, P); tc = mul_bf16x2(tc, P); td = mul_bf16x2(td, P);
    }
    a[0] = mul_bf16x2(ta, br);   // row r,     k, k + 1
    a[2] = mul_bf16x2(tb, br);   // row r,     k + 2, k + 3
    a[1] = mul_bf16x2(tc, br8);  // row r + 8, k, k + 1
    a[3] = mul_bf16x2(td, br8);  // row r + 8, k + 2, k + 3
}

// one word of 8 E2M1 codes (quant._mma8_word) -> two registers of 4 e4m3 bytes, each the code's value
// times 2^-6 (sign -> bit 7, e1 e0 m -> bits 4..2; the 0.5 code is the e4m3 subnormal 4 * 2^-9)
__device__ __forceinline__ void unpack8_word(uint32_t x, uint32_t& lo, uint32_t& hi) {
    const uint32_t M = 0x9C9C9C9Cu;
    lo = x & M;
    hi = ((x >> 2) ^ (x << 2)) & M;
}

__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint16_t f32_to_bf16(float f) {
    uint16_t h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float swiglu(float gate, float up) {
    gate = fminf(gate, SWIGLU_LIMIT);
    up = fminf(fmaxf(up, -SWIGLU_LIMIT), SWIGLU_LIMIT);
    return gate / (1.0f + __expf(-SWIGLU_ALPHA * gate)) * (up + 1.0f);
}

struct ExpertRows {
    int expert;   // local expert, E for the foreign rows, -1: nothing to do
    int start;    // first sorted row
    int count;    // rows (tokens) of this expert
};

// The j-th expert with rows (j = blockIdx.x, or blockIdx.y with EXPERT_ON_Y) and where its rows start,
// computed by one warp (every lane ends with the same answer).
template <bool EXPERT_ON_Y = false>
__device__ __forceinline__ ExpertRows scan_rows(const int* __restrict__ counts, int num_experts, int nv,
                                                int block_m, bool has_foreign) {
    const int lane = threadIdx.x & 31;
    const int j = EXPERT_ON_Y ? blockIdx.y : blockIdx.x;
    int cnt[MAX_EXPERTS / 32];
#pragma unroll
    for (int i = 0; i < MAX_EXPERTS / 32; ++i) {
        int e = i * 32 + lane;
        cnt[i] = e < num_experts ? counts[e] : 0;
    }
    int seen = 0, pad_before = 0, total = 0, found = -1, fstart = 0, fcount = 0;
#pragma unroll
    for (int i = 0; i < MAX_EXPERTS / 32; ++i) {
        int c = cnt[i];
        int padded = (c + block_m - 1) / block_m * block_m;
        unsigned nz = __ballot_sync(0xffffffffu, c > 0);
        // inclusive prefix of padded counts across the 32 lanes
        int pre = padded;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            int v = __shfl_up_sync(0xffffffffu, pre, o);
            if (lane >= o) pre += v;
        }
        int n = __popc(nz);
        if (found < 0 && j >= seen && j < seen + n) {
            // the (j - seen)-th set bit of nz
            int want = j - seen, idx = 0;
            unsigned m = nz;
            for (int k = 0; k < want; ++k) m &= m - 1;
            idx = __ffs(m) - 1;
            found = i * 32 + idx;
            fstart = pad_before + __shfl_sync(0xffffffffu, pre - padded, idx);
            fcount = __shfl_sync(0xffffffffu, c, idx);
        }
        seen += n;
        pad_before += __shfl_sync(0xffffffffu, pre, 31);
        int s = c;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        total += s;
    }
    if (found >= 0) return ExpertRows{found, fstart, fcount};
    if (has_foreign && j == seen && nv > total) return ExpertRows{num_experts, pad_before, nv - total};
    return ExpertRows{-1, 0, 0};
}

// PER_WARP: every warp scans for itself (no block-wide barrier: a warp starts its weight stream as soon
// as it knows its expert); else warp 0 scans and the block reads its answer from shared memory.
template <bool PER_WARP, bool EXPERT_ON_Y = false>
__device__ __forceinline__ ExpertRows find_rows(const int* __restrict__ counts, int num_experts, int nv,
                                                int block_m, bool has_foreign) {
    if (PER_WARP) return scan_rows<EXPERT_ON_Y>(counts, num_experts, nv, block_m, has_foreign);
    __shared__ ExpertRows rows;
    if (threadIdx.x < 32) {
        ExpertRows er = scan_rows<EXPERT_ON_Y>(counts, num_experts, nv, block_m, has_foreign);
        if (threadIdx.x == 0) rows = er;
    }
    __syncthreads();
    return rows;
}

// Rows routed to another rank's experts (er.expert == E): this rank's share of their output is zero
// (the CTA's tile group: blockIdx.y, or blockIdx.x with EXPERT_ON_Y).
template <bool GATED, int WN, int MT, bool EXPERT_ON_Y = false>
__device__ __forceinline__ void zero_foreign_rows(const ExpertRows& er, const int* __restrict__ sorted_ids,
                                                  uint16_t* __restrict__ out, long long out_stride, int n_out,
                                                  int nv) {
    const int cols = GATED ? 8 : 16;
    for (int i = threadIdx.x; i < er.count * WN * MT * cols; i += blockDim.x) {
        int row = i / (WN * MT * cols), c = i % (WN * MT * cols);
        int col = ((EXPERT_ON_Y ? blockIdx.x : blockIdx.y) * WN * MT + c / cols) * cols + c % cols;
        int slot = sorted_ids[er.start + row];
        if (col < n_out && slot < nv) out[(long long)slot * out_stride + col] = 0;
    }
}

// The epilogue of one 16-row tile `tl` and token group `grp` from its sums v (the lane's C fragment):
// the activations' row scale (e4m3 activations; a_scale is null for bf16 ones unless ALWAYS_SCALED, the
// W4A8 kernel), then bias and SwiGLU (gated: rows 0-7 gate, 8-15 the matching up rows) or bias and
// routing weight; bf16 out. Both kernels' bodies call it.
template <bool GATED, bool ALWAYS_SCALED>
__device__ __forceinline__ void store_tile(const float (&v)[4], int tl, int grp, const ExpertRows& er, int r,
                                           int q, const int* __restrict__ sorted_ids, int nv, int a_div,
                                           const float* __restrict__ a_scale, const float* __restrict__ bias,
                                           long long bias_stride, int up_off, const float* __restrict__ topk_w,
                                           uint16_t* __restrict__ out, long long out_stride, int n_out) {
#pragma unroll
    for (int t = 0; t < 2; ++t) {         // the lane's two token columns 2 q, 2 q + 1
        int idx = grp * 8 + 2 * q + t;
        if (idx >= er.count) continue;
        int slot = sorted_ids[er.start + idx];
        if (slot >= nv) continue;
        uint16_t* orow = out + (long long)slot * out_stride;
        const float as = (ALWAYS_SCALED || a_scale) ? a_scale[slot / a_div] : 1.0f;
        if (GATED) {
            int col = tl * 8 + r;
            if (col < n_out) {
                float gate = v[t] * as, up = v[2 + t] * as;
                if (bias) {
                    gate += bias[er.expert * bias_stride + col];
                    up += bias[er.expert * bias_stride + up_off + col];
                }
                orow[col] = f32_to_bf16(swiglu(gate, up));
            }
        } else {
            float rw = topk_w ? topk_w[slot] : 1.0f;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                int col = tl * 16 + r + 8 * h;
                if (col < n_out) {
                    float y = v[2 * h + t] * as;
                    if (bias) y += bias[er.expert * bias_stride + col];
                    orow[col] = f32_to_bf16(y * rw);
                }
            }
        }
    }
}

// The arguments of every kernel (mx_cuda._launch passes them in this order) and of the bodies behind them:
// R = __restrict__ for a body, nothing for a kernel; AT / ST the element types of the activations and
// scales (uint16_t; the W4A8 kernel reads bytes, uint8_t). MX_PASS passes the same names on.
#define MX_PARAMS(R, AT, ST)                                                                          \
    const AT* R a, long long a_stride, int a_div, const float* R a_scale, const uint4* R w,          \
        const ST* R ws, const float* R bias, long long bias_stride, int up_off, uint16_t* R out,      \
        long long out_stride, const float* R topk_w, const int* R sorted_ids, const int* R counts,   \
        int num_experts, int nv, int block_m, int has_foreign, int n_out, int K, int Kc, int Nt
#define MX_ARGS MX_PARAMS(, uint16_t, uint16_t)
#define MX_PASS                                                                                       \
    a, a_stride, a_div, a_scale, w, ws, bias, bias_stride, up_off, out, out_stride, topk_w, sorted_ids, counts, \
        num_experts, nv, block_m, has_foreign, n_out, K, Kc, Nt
