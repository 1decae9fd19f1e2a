#!/usr/bin/python3
"""The tg-bench networks in PyTorch, side by side with tapegrad.

    /usr/bin/python3 tools/bench_torch.py [--tg build/tools/tg-bench] [--nets B-small,B-seed]
        [--dtypes f32,f64] [--threads 1,2] [--reps 7] [--min-time 0.2] [--rounds 3]
        [--markdown]

For each configuration (network, dtype, threads) runs tools/tg-bench (its own environment,
unchanged) and PyTorch in a fresh child process (so peak RSS is per configuration) with
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from the environment, so PyTorch's OpenBLAS
picks its best kernels for this CPU, and torch.set_num_threads(threads). Same networks,
batch, initial scale, loss and lr as tg-bench (examples as rows, nn.Linear); a standard
training step: forward, loss.backward(), optimizer.step(), optimizer.zero_grad(). Timing
procedure as tg-bench: warm up, then `reps` runs of `iters` steps; median and min-max per step.

The pair is run `--rounds` times (default 3), the order alternating (ours first, then PyTorch
first, ...): the speed of a shared machine drifts by 10-30 % over minutes, and a slow spell
should not land on one side only. Prints one table: medians over the rounds, min-max over all
runs, PyTorch/ours as the median of the per-round ratios (how many times faster we are) and in
how many rounds ours was faster, and our GFLOP/s as a percentage of the FMA peak that each
tg-bench child measured around its own steps (median and min-max over the rounds).
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time

NETS = {
    # name: (dims, batch, hidden act, output act, loss)
    "B-small": ((2, 16, 16, 1), 32, "tanh", "identity", "mse"),
    "B-seed": ((784, 256, 128, 10), 128, "tanh", "sigmoid", "mse_half"),
    "B-mnist": ((784, 512, 256, 10), 128, "relu", "identity", "xent"),
    "B-wide": ((1024, 4096, 4096, 1024), 256, "relu", "identity", "mse"),
}


def step_flops(dims, batch):
    return sum(2.0 * batch * dims[i] * dims[i + 1] * (2 if i == 0 else 3) for i in range(3))


def torch_child(net, dtype, threads, reps, min_time):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(42)
    dims, batch, hidden, out, loss_kind = NETS[net]
    dt = torch.float32 if dtype == "f32" else torch.float64
    acts = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid,
            "identity": torch.nn.Identity}
    layers = []
    for i in range(3):
        layers.append(torch.nn.Linear(dims[i], dims[i + 1]))
        layers.append(acts[out if i == 2 else hidden]())
    model = torch.nn.Sequential(*layers).to(dt)
    x = torch.rand(batch, dims[0], dtype=dt)
    y = torch.rand(batch, dims[3], dtype=dt)
    labels = torch.arange(batch) % dims[3]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mse = torch.nn.MSELoss()
    xent = torch.nn.CrossEntropyLoss()

    def step():
        a = model(x)
        if loss_kind == "mse":
            loss = mse(a, y)
        elif loss_kind == "mse_half":  # the note's J = 1/(2m) Σ (Y - A)²
            loss = ((a - y) ** 2).sum() / (2 * batch)
        else:
            loss = xent(a, labels)
        loss.backward()
        opt.step()
        opt.zero_grad()

    t0 = time.perf_counter()
    warm = 0
    while warm < 3 or (time.perf_counter() - t0 < 0.2 and warm < 50):
        step()
        warm += 1
    per_step = (time.perf_counter() - t0) / warm
    iters = max(1, int(min_time / per_step))
    us = []
    for _ in range(reps):
        s = time.perf_counter()
        for _ in range(iters):
            step()
        us.append((time.perf_counter() - s) / iters * 1e6)
    med = statistics.median(us)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"net={net} dtype={dtype} threads={threads} median_us={med:.2f} min_us={min(us):.2f} "
          f"max_us={max(us):.2f} gflops={step_flops(dims, batch) / med * 1e-3:.2f} "
          f"peak_rss_kib={rss} torch={torch.__version__}", flush=True)


def parse(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tg", default=None, help="path to tg-bench (default: build*/tools)")
    ap.add_argument("--nets", default="B-small,B-seed,B-mnist,B-wide")
    ap.add_argument("--dtypes", default="f32,f64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--rounds", type=int, default=3,
                    help="(tapegrad, PyTorch) pairs per configuration, order alternating")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--child", nargs=3, metavar=("NET", "DTYPE", "THREADS"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        torch_child(a.child[0], a.child[1], int(a.child[2]), a.reps, a.min_time)
        return 0

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tg = a.tg
    if not tg:
        for b in ("build-perf", "build", "build-rel"):
            p = os.path.join(root, b, "tools", "tg-bench")
            if os.access(p, os.X_OK):
                tg = p
                break
    if not tg:
        sys.exit("bench_torch.py: tg-bench not found; pass --tg PATH")

    common = ["--reps", str(a.reps), "--min-time", str(a.min_time)]
    torch_env = {k: v for k, v in os.environ.items()
                 if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}

    def run_ours(net, dtype, th):
        out = subprocess.run([tg, "--nets", net, "--dtypes", dtype, "--threads", th] + common,
                             check=True, capture_output=True, text=True).stdout
        return next(parse(line) for line in out.splitlines() if line.startswith("net="))

    def run_torch(net, dtype, th):
        # torch.set_num_threads does not reach OpenBLAS's own thread pool: without these,
        # "1 thread" PyTorch multiplies matrices on every core (and 2 threads oversubscribe),
        # so each child gets the thread count in all three variables.
        env = dict(torch_env, OMP_NUM_THREADS=th, OPENBLAS_NUM_THREADS=th, MKL_NUM_THREADS=th)
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", net, dtype,
                              th, "--reps", str(a.reps), "--min-time", str(a.min_time)],
                             env=env, check=True, capture_output=True, text=True).stdout
        return next(parse(line) for line in out.splitlines() if line.startswith("net="))

    ours, theirs, ratios = {}, {}, {}
    for net in a.nets.split(","):
        for dtype in a.dtypes.split(","):
            for th in a.threads.split(","):
                key = (net, dtype, th)
                for rnd in range(max(1, a.rounds)):
                    if rnd % 2 == 0:
                        o = run_ours(*key)
                        t = run_torch(*key)
                    else:
                        t = run_torch(*key)
                        o = run_ours(*key)
                    ours.setdefault(key, []).append(o)
                    theirs.setdefault(key, []).append(t)
                    ratios.setdefault(key, []).append(float(t["median_us"]) /
                                                      float(o["median_us"]))
                print(f"# {net} {dtype} {th} thread(s): PyTorch/ours per round "
                      + " ".join(f"{r:.2f}" for r in ratios[key]), file=sys.stderr, flush=True)

    def summary(runs):
        """Median over rounds of the medians; min and max over every run; largest RSS."""
        return (statistics.median(float(r["median_us"]) for r in runs),
                min(float(r["min_us"]) for r in runs), max(float(r["max_us"]) for r in runs),
                max(int(r["peak_rss_kib"]) for r in runs))

    hdr = ["network", "dtype", "thr", "tapegrad µs (min-max)", "PyTorch µs (min-max)",
           "PyTorch/ours (won)", "ours GFLOP/s", "ours % of FMA peak (min-max)", "allocs/step",
           "RSS MiB ours/PyTorch", "kernel"]
    rows = []
    for k in ours:
        (om, olo, ohi, orss), (tm, tlo, thi, trss) = summary(ours[k]), summary(theirs[k])
        won = sum(r > 1 for r in ratios[k])
        # GFLOP/s at the median time (each run's flops per step = gflops * µs * 1e-3)
        flops = statistics.median(float(r["gflops"]) * float(r["median_us"]) for r in ours[k])
        allocs = max(ours[k], key=lambda r: float(r["allocs_per_step"]))["allocs_per_step"]
        # each run's step GFLOP/s over the peak its own child measured (tg-bench)
        pct = [float(r.get("pct_peak", "nan")) for r in ours[k]]
        pct_cell = (f"{statistics.median(pct):.1f} ({min(pct):.1f}-{max(pct):.1f})"
                    if all(p == p for p in pct) else "n/a")
        rows.append([k[0], k[1], k[2], f"{om:.1f} ({olo:.1f}-{ohi:.1f})",
                     f"{tm:.1f} ({tlo:.1f}-{thi:.1f})",
                     f"{statistics.median(ratios[k]):.2f}x ({won}/{len(ratios[k])})",
                     f"{flops / om:.2f}", pct_cell, allocs,
                     f"{orss / 1024:.1f} / {trss / 1024:.1f}",
                     ours[k][0]["kernel"]])
    if a.markdown:
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        w = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
             for i, h in enumerate(hdr)]
        print("  ".join(h.ljust(w[i]) for i, h in enumerate(hdr)))
        for r in rows:
            print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)))
    if theirs:
        print(f"# PyTorch {next(iter(theirs.values()))[0]['torch']}, OPENBLAS_CORETYPE and "
              f"OPENBLAS_L2_SIZE unset for it; tapegrad {tg}; {max(1, a.rounds)} round(s) "
              f"per row, order alternating")
    return 0


if __name__ == "__main__":
    sys.exit(main())
