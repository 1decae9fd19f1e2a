#!/usr/bin/python3
"""PyTorch's pre-norm nn.TransformerEncoderLayer, its weights loaded by tapegrad's
tg_transformer_block, gives PyTorch's output and gradients.

Builds torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu",
batch_first=True, norm_first=True) in float64 with random weights (the layer norms' weights
and biases and the attention biases too, which PyTorch initializes to 1 and 0), runs a random
(2, 5, 8) input through it twice: without a mask, and causal (PyTorch 1.13's layer has no
is_causal: the src_mask there is the -inf upper triangle; tapegrad gets is_causal = true and no
mask), and backward from sum(R * y), R random. Writes one safetensors file with the weights
under tapegrad's names (self_attn.in_proj_weight -> blk/self_attn/in_proj_weight,
self_attn.out_proj.weight -> blk/self_attn/out_proj/W, norm1.weight -> blk/norm1/W,
linear1.weight -> blk/linear1/W, linear1.bias -> blk/linear1/b as (1, ff), ...), the input and
R, and PyTorch's outputs and gradients (x and each parameter, under "<run>/d/<tapegrad name>"),
then runs `transformer_interop FILE` (tests/reference/transformer_interop.c), which compares
them within 1e-9 of each tensor's largest element.

    torch_transformer_interop.py TRANSFORMER_INTEROP        (exit 77 without torch)
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

B, T, D, HEADS, FF = 2, 5, 8, 2, 16


def tapegrad_name(key):
    """PyTorch's state_dict key -> tapegrad's parameter name under "blk/"."""
    parts = key.split(".")
    if parts[-1] in ("weight", "bias") and parts[-1 if len(parts) == 1 else -2] != "self_attn":
        parts[-1] = "W" if parts[-1] == "weight" else "b"
    return "blk/" + "/".join(parts)


def tapegrad_value(key, v):
    """linear1/linear2 biases are (1, out) rows in tapegrad's dense layer."""
    v = v.detach().numpy().copy()
    return v.reshape(1, -1) if key.startswith("linear") and key.endswith("bias") else v


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    torch.manual_seed(17)
    dt = torch.float64
    layer = nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True, dtype=dt)
    with torch.no_grad():
        for name, v in layer.named_parameters():
            if name.startswith("norm"):
                v.uniform_(0.5, 1.5) if name.endswith("weight") else v.uniform_(-0.5, 0.5)
            elif name.endswith("bias"):
                v.uniform_(-0.5, 0.5)
    x = torch.randn(B, T, D, dtype=dt)
    r = torch.rand(B, T, D, dtype=dt) * 2 - 1
    causal = torch.zeros(T, T, dtype=dt).masked_fill(
        torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    params = dict(layer.named_parameters())
    tensors = {tapegrad_name(k): tapegrad_value(k, v) for k, v in params.items()}
    tensors["check/x"] = x.numpy()
    tensors["check/R"] = r.numpy()
    for run, m in (("plain", None), ("causal", causal)):
        layer.zero_grad()
        xg = x.clone().requires_grad_(True)
        y = layer(xg, src_mask=m)
        (y * r).sum().backward()
        tensors[f"{run}/y"] = y.detach().reshape(-1).numpy()
        tensors[f"{run}/dx"] = xg.grad.reshape(-1).numpy()
        for k, v in params.items():
            tensors[f"{run}/d/{tapegrad_name(k)}"] = v.grad.reshape(-1).numpy().copy()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "transformer-f64.safetensors")
        save_safetensors(path, tensors)
        out = subprocess.run([sys.argv[1], path], capture_output=True, text=True)
        sys.stdout.write(out.stdout)
        sys.stderr.write(out.stderr)
    ok = out.returncode == 0
    print("PyTorch's TransformerEncoderLayer weights give PyTorch's output and gradients in "
          "tapegrad" if ok else "MISMATCH between PyTorch's TransformerEncoderLayer and tapegrad's")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
