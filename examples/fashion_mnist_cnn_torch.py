#!/usr/bin/python3
"""Fashion-MNIST with a CNN in PyTorch, side by side with tapegrad's examples/fashion-mnist-cnn.

The same network and settings:

    conv 1->32 3x3 (padding 1), BatchNorm2d, ReLU, 2x2 max pool
    conv 32->64 3x3 (padding 1), BatchNorm2d, ReLU, 2x2 max pool
    dropout 0.25, Linear 3136->128, ReLU, dropout 0.25, Linear 128->10
    F.cross_entropy (mean), Adam lr 1e-3 with a per-step cosine decay to 0 over the whole run
    (tapegrad's TG_SCHEDULE_COSINE), batch 64, a fresh shuffle each epoch, float32

PyTorch's default initialization for the convolutions (as tg_conv2d_layer), PyTorch's for
the Linear layers too (tapegrad's tg_dense uses He-normal for the ReLU layer and
Xavier-uniform for the output), batch-norm momentum 0.1 and eps 1e-5 on both sides.
Evaluation runs in eval() mode (running statistics, no dropout), as the C example.

With --c-binary it first runs the C example with the same flags, then trains here, and prints
both accuracies and wall times:

    /usr/bin/python3 examples/fashion_mnist_cnn_torch.py --c-binary build/examples/fashion-mnist-cnn \\
        --epochs 15 --threads 2

(run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, so that PyTorch runs at full speed).
Needs numpy and torch (Debian: python3-torch) and dataset-fashion-mnist.
"""
import argparse
import gzip
import math
import os
import re
import subprocess
import sys
import time

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    import numpy as np

    with gzip.open(path, "rb") as f:
        raw = f.read()
    rank = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(raw, dtype=">u1", offset=4 + 4 * rank).reshape(dims)


def run_c(args):
    cmd = [args.c_binary, "--epochs", str(args.epochs), "--batch", str(args.batch),
           "--threads", str(args.threads), "--quiet"]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    t0 = time.time()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    wall = time.time() - t0
    sys.stdout.write(out)
    acc = float(re.search(r"final test accuracy ([0-9.]+)%", out).group(1))
    train = float(re.search(r"training ([0-9.]+) s", out).group(1))
    return acc, train, wall


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="train on the first N shuffled images")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--c-binary", help="run tapegrad's example first, with the same flags")
    args = p.parse_args()

    c = run_c(args) if args.c_binary else None

    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    xtr = torch.from_numpy(read_idx(f"{args.data}/train-images-idx3-ubyte.gz").astype(np.float32) / 255)
    ytr = torch.from_numpy(read_idx(f"{args.data}/train-labels-idx1-ubyte.gz").astype(np.int64))
    xte = torch.from_numpy(read_idx(f"{args.data}/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255)
    yte = torch.from_numpy(read_idx(f"{args.data}/t10k-labels-idx1-ubyte.gz").astype(np.int64))
    xtr, xte = xtr.reshape(-1, 1, 28, 28), xte.reshape(-1, 1, 28, 28)
    n_train = min(args.limit, len(xtr)) if args.limit else len(xtr)

    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = math.ceil(n_train / args.batch) * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    print(f"pytorch {torch.__version__}: {sum(p.numel() for p in model.parameters())} parameters, "
          f"{n_train} training images, {args.threads} threads")
    t_train, acc = 0.0, 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(xtr))[:n_train]
        t0 = time.time()
        loss_sum = 0.0
        for i in range(0, n_train, args.batch):
            idx = order[i:i + args.batch]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
        secs = time.time() - t0
        t_train += secs
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(xte[i:i + 500]).argmax(1) for i in range(0, len(xte), 500)])
        acc = 100.0 * (pred == yte).float().mean().item()
        print(f"epoch {epoch}/{args.epochs}: train loss {loss_sum / n_train:.4f}  test accuracy "
              f"{acc:.2f}%  {secs:.1f} s ({n_train / secs:.0f} images/s)", flush=True)
    print(f"training {t_train:.1f} s; final test accuracy {acc:.2f}%")
    if c:
        print(f"\nside by side ({args.epochs} epochs, batch {args.batch}, {args.threads} threads):")
        print(f"  tapegrad  test accuracy {c[0]:.2f}%  training {c[1]:.1f} s  (wall {c[2]:.1f} s)")
        print(f"  pytorch   test accuracy {acc:.2f}%  training {t_train:.1f} s")
        print(f"  pytorch / tapegrad training time: {t_train / c[1]:.2f}x")


if __name__ == "__main__":
    main()
