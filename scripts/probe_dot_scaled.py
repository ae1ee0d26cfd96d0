"""Probe: does tl.dot_scaled (bf16 x e2m1) compile and run on this Triton/GPU?"""
import torch, triton, triton.language as tl

@triton.jit
def k(a_ptr, b_ptr, bs_ptr, c_ptr, M, N, K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pm = tl.program_id(0); pn = tl.program_id(1)
    rm = pm * BM + tl.arange(0, BM); rn = pn * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), tl.float32)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK); rk2 = k0 // 2 + tl.arange(0, BK // 2); rks = k0 // 32 + tl.arange(0, BK // 32)
        a = tl.load(a_ptr + rm[:, None] * K + rk[None, :])
        b = tl.load(b_ptr + rk2[:, None] * N + rn[None, :])
        bs = tl.load(bs_ptr + rn[:, None] * (K // 32) + rks[None, :])
        acc = tl.dot_scaled(a, None, "bf16", b, bs, "e2m1", acc)
    tl.store(c_ptr + rm[:, None] * N + rn[None, :], acc)

M, N, K = 64, 256, 256
a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
b = torch.randint(0, 256, (K // 2, N), device="cuda", dtype=torch.uint8)
bs = torch.randint(120, 130, (N, K // 32), device="cuda", dtype=torch.uint8)
c = torch.empty(M, N, device="cuda", dtype=torch.float32)
k[(M // 64, N // 64)](a, b, bs, c, M, N, K, 64, 64, 128)
lut = torch.tensor([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], device="cuda")
lo = lut[(b & 15).long()]; hi = lut[(b >> 4).long()]
wf = torch.stack([lo, hi], 1).reshape(K, N)
sc = torch.exp2(bs.float() - 127).t().repeat_interleave(32, 0)
ref = a.float() @ (wf * sc)
print("dot_scaled rel err", ((c - ref).norm() / ref.norm()).item())
