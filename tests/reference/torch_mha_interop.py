#!/usr/bin/python3
"""PyTorch's nn.MultiheadAttention weights, loaded by tapegrad, give PyTorch's output and
gradients.

Builds torch.nn.MultiheadAttention(8, 2, batch_first=True) in float64 with random weights
(the biases too, which PyTorch initializes to 0), runs a random (3, 5, 8) input through it as
self-attention twice: with an additive float (T, T) mask holding -inf entries (never a whole
row), and causal (PyTorch 1.13's MultiheadAttention has no is_causal: the mask there is the
-inf upper triangle; tapegrad gets is_causal = true and no mask), and backward from
sum(R * y), R random. Writes one safetensors file with the weights under tapegrad's names
(in_proj_weight -> att/in_proj_weight, in_proj_bias -> att/in_proj_bias, out_proj.weight ->
att/out_proj/W, out_proj.bias -> att/out_proj/b), the input, mask and R, and PyTorch's outputs
and gradients (x and each parameter), then runs `mha_interop FILE` (tests/reference/
mha_interop.c), which compares them within 1e-9 of each tensor's largest element.

    torch_mha_interop.py MHA_INTEROP        (exit 77 without torch)
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np  # noqa: F401  (save_safetensors uses it)
    import torch
    import torch.nn as nn
except ImportError:
    print("skipped: python3-torch not installed: run tools/install-deps.sh --all")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_cnn_interop import save_safetensors  # noqa: E402  (the one writer of the format)

B, T, D, HEADS = 3, 5, 8, 2
NAMES = {"in_proj_weight": "att/in_proj_weight", "in_proj_bias": "att/in_proj_bias",
         "out_proj.weight": "att/out_proj/W", "out_proj.bias": "att/out_proj/b"}
GRADS = [("in_proj_weight", "d_in_proj_weight"), ("in_proj_bias", "d_in_proj_bias"),
         ("out_proj.weight", "d_out_proj_weight"), ("out_proj.bias", "d_out_proj_bias")]


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    torch.manual_seed(11)
    dt = torch.float64
    mha = nn.MultiheadAttention(D, HEADS, batch_first=True, dropout=0.0, dtype=dt)
    with torch.no_grad():
        mha.in_proj_bias.uniform_(-0.5, 0.5)
        mha.out_proj.bias.uniform_(-0.5, 0.5)
    x = torch.randn(B, T, D, dtype=dt)
    r = torch.rand(B, T, D, dtype=dt) * 2 - 1
    mask = torch.rand(T, T, dtype=dt) - 0.5
    holes = torch.rand(T, T) < 0.3
    holes[:, 0] = False  # every row keeps a key: a fully masked row is NaN in PyTorch
    mask = mask.masked_fill(holes, float("-inf"))
    causal = torch.zeros(T, T, dtype=dt).masked_fill(
        torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    params = dict(mha.named_parameters())
    tensors = {NAMES[k]: v.detach().numpy().copy() for k, v in params.items()}
    tensors["check/x"] = x.numpy()
    tensors["check/mask"] = mask.numpy()
    tensors["check/R"] = r.numpy()
    for run, m in (("mask", mask), ("causal", causal)):
        mha.zero_grad()
        xg = x.clone().requires_grad_(True)
        y, _ = mha(xg, xg, xg, attn_mask=m, need_weights=False)
        (y * r).sum().backward()
        tensors[f"{run}/y"] = y.detach().reshape(-1).numpy()
        tensors[f"{run}/dx"] = xg.grad.reshape(-1).numpy()
        for pname, gname in GRADS:
            tensors[f"{run}/{gname}"] = params[pname].grad.reshape(-1).numpy().copy()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mha-f64.safetensors")
        save_safetensors(path, tensors)
        out = subprocess.run([sys.argv[1], path], capture_output=True, text=True)
        sys.stdout.write(out.stdout)
        sys.stderr.write(out.stderr)
    ok = out.returncode == 0
    print("PyTorch's MultiheadAttention weights give PyTorch's output and gradients in tapegrad"
          if ok else "MISMATCH between PyTorch's MultiheadAttention and tapegrad's")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
