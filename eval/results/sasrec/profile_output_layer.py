"""One training step's output layer on Beauty's shape (768 positions x 12,101 items x hidden 64), threads=1:
float32 vs bfloat16 matmul, and the cross-entropy on float32 or bfloat16 logits (output: profile_output_layer.txt).

PYTHONPATH=$PWD python eval/results/sasrec/profile_output_layer.py
"""

import time

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
N, H, ITEMS = 768, 64, 12101
h = torch.randn(N, H, requires_grad=True)
W = torch.randn(ITEMS, H, requires_grad=True)
t = torch.randint(0, ITEMS, (N,))
lg = (h @ W.T).detach().requires_grad_()
lgb = lg.detach().bfloat16().requires_grad_()


def bench(name, fn, reps=20):
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    print(f"{name}: {(time.perf_counter() - start) / reps * 1000:.1f} ms", flush=True)


def mm_bf16():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return h @ W.T


def step_bf16(cast_to_float: bool):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = h @ W.T
    F.cross_entropy(logits.float() if cast_to_float else logits, t).backward()


bench("fwd mm fp32", lambda: h @ W.T)
bench("fwd mm bf16 autocast", mm_bf16)
bench("fwd mm bf16 manual", lambda: h.bfloat16() @ W.bfloat16().T)
bench("CE fwd fp32", lambda: F.cross_entropy(lg, t))
bench("CE fwd bf16->float", lambda: F.cross_entropy(lgb.float(), t))
bench("CE fwd+bwd fp32", lambda: F.cross_entropy(lg, t).backward())
bench("mm fp32 fwd+bwd + CE", lambda: F.cross_entropy(h @ W.T, t).backward())
bench("mm bf16 fwd+bwd + CE", lambda: step_bf16(True))
bench("mm bf16 fwd+bwd + CE(bf16 logits)", lambda: step_bf16(False))
