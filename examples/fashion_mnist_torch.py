#!/usr/bin/python3
"""Fashion-MNIST in PyTorch, side by side with tapegrad's examples/fashion-mnist.

Trains the identical network with identical hyper-parameters: 784-512-256-10 with ReLU,
softmax cross-entropy (mean over the batch), float32, minibatches of --batch drawn from a fresh
shuffle each epoch (the last batch short), the same optimizer and rate:

    sgd       torch.optim.SGD(lr=0.1)
    momentum  torch.optim.SGD(lr=0.05, momentum=0.9)
    adam      torch.optim.Adam(lr=1e-3)                      (betas 0.9/0.999, eps 1e-8)
    adamw     torch.optim.AdamW(lr=1e-3, weight_decay=0.01)

the same learning-rate schedule (cosine decay to 0 over all the run's steps after an optional
linear warm-up, tapegrad's TG_SCHEDULE_COSINE, as a per-step LambdaLR; or constant), and the
same initialization *scheme* as tg_dense: He-normal N(0, 2/fan_in) for the two ReLU
layers, Xavier-uniform for the output layer, zero biases. The random values differ (different
generators), and so does the shuffle order, so per-epoch figures differ by run-to-run noise
(a few tenths of a percent), not by method.

With --c-binary it first runs the C example with the same flags as a subprocess, parses its
report, then trains here, and prints both accuracies and wall times side by side.

    unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE   # (only for this benchmark command)
    /usr/bin/python3 examples/fashion_mnist_torch.py --c-binary build/examples/fashion-mnist \\
        --optimizer adam --epochs 8 --batch 128 --threads 2

Needs numpy and torch (Debian: python3-torch) and the data set (dataset-fashion-mnist).
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
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "adam": 1e-3, "adamw": 1e-3}


def read_idx(path):
    """An IDX file (gzip or plain) as a numpy array, big-endian as the format says."""
    import numpy as np

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic)")
    types = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in types:
        raise ValueError(f"{path}: unknown IDX type 0x{raw[2]:02x}")
    rank = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
    data = np.frombuffer(raw, dtype=types[raw[2]], offset=4 + 4 * rank)
    return data.reshape(dims)


def load(data_dir):
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    paths = [os.path.join(data_dir, n) for n in names]
    for p in paths:
        if not os.access(p, os.R_OK):
            sys.exit(f"fashion_mnist_torch: cannot read {p}\n"
                     "  The Fashion-MNIST data set is not installed. On Debian/Ubuntu:\n"
                     "      apt-get install dataset-fashion-mnist\n"
                     "  or pass --data DIR.")
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)
    scale = lambda x: (x.reshape(len(x), -1).astype("float32") / 255.0)
    return scale(xtr), ytr.astype("int64"), scale(xte), yte.astype("int64")


def make_optimizer(torch, params, name, lr):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


def lr_factor(args, steps_per_epoch):
    """tg_lr_at / base rate for update `step` (0-based): the C example's schedule."""
    w, total = args.warmup, args.epochs * steps_per_epoch

    def f(step):
        if step < w:
            return (step + 1) / w
        if args.schedule == "constant":
            return 1.0
        s, d = step - w, total - w
        return 0.0 if s >= d else 0.5 * (1.0 + math.cos(math.pi * s / d))
    return f


def train_torch(args):
    import numpy as np  # noqa: F401  (read_idx)
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    xtr, ytr, xte, yte = load(args.data)
    xtr, ytr = torch.from_numpy(xtr), torch.from_numpy(ytr)
    xte, yte = torch.from_numpy(xte), torch.from_numpy(yte)
    if args.limit:
        xtr, ytr = xtr[:args.limit], ytr[:args.limit]

    nn = torch.nn
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    with torch.no_grad():
        for layer, relu in ((model[0], True), (model[2], True), (model[4], False)):
            if relu:
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    opt = make_optimizer(torch, model.parameters(), args.optimizer, args.lr)
    steps_per_epoch = (len(xtr) + args.batch - 1) // args.batch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(args, steps_per_epoch))
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(args.seed)

    print(f"pytorch {torch.__version__}: 784-512-256-10 ReLU, "
          f"{sum(p.numel() for p in model.parameters())} parameters; optimizer {args.optimizer}, "
          f"lr {args.lr:g} ({args.schedule} schedule, {args.warmup} warm-up steps), "
          f"batch {args.batch}, seed {args.seed}, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    n = len(xtr)
    train_seconds, acc, epochs = 0.0, 0.0, []
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for i in range(0, n, args.batch):
            idx = order[i:i + args.batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
        secs = time.perf_counter() - t0
        train_seconds += secs
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum())
                          for i in range(0, len(xte), 1000))
        acc = 100.0 * correct / len(xte)
        epochs.append(acc)
        print(f"epoch {epoch}/{args.epochs}: train loss {loss_sum / n:.4f}  "
              f"test accuracy {acc:.2f}%  {secs:.1f} s ({n / secs:.0f} examples/s)", flush=True)
    total = time.perf_counter() - t_start
    print(f"total {total:.1f} s (training {train_seconds:.1f} s, "
          f"{n * args.epochs / train_seconds:.0f} examples/s); final test accuracy {acc:.2f}%",
          flush=True)
    return {"accuracy": acc, "train_seconds": train_seconds, "total": total,
            "examples_per_s": n * args.epochs / train_seconds, "epochs": epochs,
            "version": torch.__version__}


def run_c(args):
    cmd = [args.c_binary, "--epochs", str(args.epochs), "--batch", str(args.batch),
           "--lr", repr(args.lr), "--optimizer", args.optimizer, "--threads", str(args.threads),
           "--seed", str(args.seed), "--data", args.data, "--schedule", args.schedule,
           "--warmup", str(args.warmup), "--quiet"]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"fashion_mnist_torch: {args.c_binary} exited with {proc.returncode}")
    epochs = [float(m) for m in re.findall(r"test accuracy ([0-9.]+)%  ", proc.stdout)]
    m = re.search(r"total ([0-9.]+) s \(training ([0-9.]+) s, ([0-9.]+) examples/s\); "
                  r"final test accuracy ([0-9.]+)%", proc.stdout)
    if not m:
        sys.exit("fashion_mnist_torch: could not parse the C example's report")
    return {"accuracy": float(m.group(4)), "train_seconds": float(m.group(2)), "total": wall,
            "examples_per_s": float(m.group(3)), "epochs": epochs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--optimizer", choices=["sgd", "momentum", "adam", "adamw"], default="adam")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--schedule", choices=["constant", "cosine"], default="cosine")
    ap.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N examples only")
    ap.add_argument("--c-binary", help="path to tapegrad's fashion-mnist example: run it too")
    args = ap.parse_args()
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    if args.epochs < 1 or args.batch < 1 or args.threads < 1 or not args.lr > 0 or args.warmup < 0:
        ap.error("--epochs, --batch, --threads and --lr must be positive, --warmup >= 0")

    c = run_c(args) if args.c_binary else None
    if c:
        print(flush=True)
    t = train_torch(args)
    if not c:
        return
    print()
    print(f"side by side: {args.optimizer}, lr {args.lr:g} {args.schedule}, batch {args.batch}, "
          f"{args.epochs} epochs, {args.threads} thread(s)")
    rows = [("", "tapegrad (C)", f"PyTorch {t['version']}")]
    for i, (a, b) in enumerate(zip(c["epochs"], t["epochs"]), 1):
        rows.append((f"test accuracy, epoch {i}", f"{a:.2f}%", f"{b:.2f}%"))
    rows += [("final test accuracy", f"{c['accuracy']:.2f}%", f"{t['accuracy']:.2f}%"),
             ("training time", f"{c['train_seconds']:.1f} s", f"{t['train_seconds']:.1f} s"),
             ("training examples/s", f"{c['examples_per_s']:.0f}", f"{t['examples_per_s']:.0f}"),
             ("wall time (load+train+eval)", f"{c['total']:.1f} s", f"{t['total']:.1f} s")]
    w = max(len(r[0]) for r in rows)
    for r in rows:
        print(f"  {r[0]:<{w}}  {r[1]:>14}  {r[2]:>16}")


if __name__ == "__main__":
    main()
