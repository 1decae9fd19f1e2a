#!/usr/bin/python3
"""A PyTorch CNN's state_dict, loaded by tapegrad, gives PyTorch's logits.

Builds examples/fashion-mnist-cnn's network in PyTorch (float64 and float32) with random
weights and random batch-norm running statistics, runs it on random 28x28 inputs in eval()
mode and in train() mode (dropout set to 0 there, so both sides are deterministic; batch
statistics in batch norm), and writes one safetensors file per dtype with the state_dict under
tapegrad's layer names (conv1.weight -> conv1/W, bn1.running_mean -> bn1/running_mean, ...:
the convolution and batch-norm tensors in their own shapes, the Linear biases as (1 x out),
tg_dense's shape in the rows layout; num_batches_tracked, which tapegrad does not keep, is
left out), the input and both outputs. Then runs `cnn_interop FILE` (tests/reference/
cnn_interop.c), which loads the file into tg_conv2d_layer / tg_batch_norm_layer / tg_dense
and compares: within 1e-12 (float64) and 1e-5 (float32) of the largest logit.

    torch_cnn_interop.py CNN_INTEROP        (exit 77 without torch)

The safetensors file is written with struct and numpy (Debian ships no safetensors package),
following the published format as tests/read_safetensors.py reads it.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torch.nn as nn
except ImportError:
    print("skipped: python3-torch not installed: run tools/install-deps.sh --all")
    sys.exit(77)

NAMES = {  # PyTorch's state_dict key -> tapegrad's parameter or buffer name
    "0.weight": "conv1/W", "0.bias": "conv1/b",
    "1.weight": "bn1/W", "1.bias": "bn1/b",
    "1.running_mean": "bn1/running_mean", "1.running_var": "bn1/running_var",
    "4.weight": "conv2/W", "4.bias": "conv2/b",
    "5.weight": "bn2/W", "5.bias": "bn2/b",
    "5.running_mean": "bn2/running_mean", "5.running_var": "bn2/running_var",
    "10.weight": "fc1/W", "10.bias": "fc1/b",
    "13.weight": "fc2/W", "13.bias": "fc2/b",
}


def network(p):
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(p), nn.Linear(3136, 128), nn.ReLU(), nn.Dropout(p),
        nn.Linear(128, 10))


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        code = {np.float32: "F32", np.float64: "F64"}[a.dtype.type]
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": code, "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = sys.argv[1]
    torch.manual_seed(3)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for dt, code in ((torch.float64, "f64"), (torch.float32, "f32")):
            model = network(0.0).to(dt)
            with torch.no_grad():
                for m in model:
                    if isinstance(m, nn.BatchNorm2d):
                        m.weight.uniform_(0.5, 1.5)
                        m.bias.uniform_(-0.5, 0.5)
                        m.running_mean.uniform_(-0.2, 0.2)
                        m.running_var.uniform_(0.5, 2.0)
            x = torch.rand(5, 1, 28, 28, dtype=dt)
            model.eval()
            with torch.no_grad():
                eval_logits = model(x)
            tensors = {NAMES[k]: v.detach().numpy().copy() for k, v in model.state_dict().items()
                       if k in NAMES}
            for fc in ("fc1/b", "fc2/b"):  # tg_dense's bias is (1 x out) in the rows layout
                tensors[fc] = tensors[fc].reshape(1, -1)
            model.train()  # batch statistics (dropout is 0); the update of the running
            with torch.no_grad():  # statistics happens after they were saved above
                train_logits = model(x)
            tensors["check/input"] = x.numpy()
            tensors["check/eval_logits"] = eval_logits.numpy()
            tensors["check/train_logits"] = train_logits.numpy()
            path = os.path.join(tmp, f"cnn-{code}.safetensors")
            save_safetensors(path, tensors)
            out = subprocess.run([binary, path, code], capture_output=True, text=True)
            sys.stdout.write(out.stdout)
            sys.stderr.write(out.stderr)
            failed |= out.returncode != 0
    print("PyTorch's state_dict gives PyTorch's logits in tapegrad" if not failed else
          "MISMATCH between PyTorch's logits and tapegrad's")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
