#!/usr/bin/env python3
"""PyTorch's counterpart of `cargo run --release -p recursa --example attention_grad`:
one call of the fused attention the reference uses (F.scaled_dot_product_attention,
float32, on the CPU) with gradient, forward and backward timed apart, then the same
call without gradient.

    python3 scripts/attention_grad.py [batch seq heads head_dim] [--threads 2]

Defaults: dis-compact's batch 4, `4 916 8 32`, on 2 threads (the side-by-side's).
Needs torch (the reference's environment, ../shared/bench/README.md).
"""
import argparse
import time

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shape", type=int, nargs="*", default=[4, 916, 8, 32])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repetitions", type=int, default=6)
    a = ap.parse_args()
    if len(a.shape) != 4 or min(a.shape) < 1:
        ap.error("shape: four positive integers, batch seq heads head_dim")
    batch, seq, heads, d = a.shape
    torch.set_num_threads(a.threads)
    print(f"attention with gradient, q, k, v: [{batch}, {seq}, {heads}, {d}] ({a.threads} threads)")
    for rep in range(a.repetitions):
        # The reference's layout inside SDPA: [batch, heads, seq, head_dim].
        q, k, v = (torch.randn(batch, heads, seq, d, requires_grad=True) for _ in range(3))
        weights = torch.rand(batch, heads, seq, d)
        start = time.perf_counter()
        loss = (F.scaled_dot_product_attention(q, k, v) * weights).sum()
        forward = time.perf_counter() - start
        start = time.perf_counter()
        loss.backward()
        backward = time.perf_counter() - start
        # The same call without autodiff (the reference's evaluation).
        with torch.inference_mode():
            start = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v).sum().item()
            no_grad = time.perf_counter() - start
        print(f"repetition {rep}: forward {forward * 1e3:.1f} ms, backward {backward * 1e3:.1f} ms; "
              f"without gradient {no_grad * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
