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

With --ops, the memory-bound ops of tools/tg-bench-ops instead:

    /usr/bin/python3 tools/bench_torch.py --ops [LIST] [--tg-ops build/tools/tg-bench-ops]
        [--threads 1,2] [--size 16M] [--softmax 256x32768] [--reps 7] [--rounds 3] [--markdown]

For each thread count, `--rounds` times in alternating order, runs tg-bench-ops (--threads,
--size, --softmax, --repeat; its `result` lines are parsed) and a PyTorch child with the same
environment rules as above, timing the same rows on float32 tensors: exp, add (two inputs)
and sum (all) of `--size` elements, forward and backward; softmax, log_softmax and logsumexp
over dim -1 of (256, 32768), forward and forward+backward; and the plain copy (dst.copy_(src))
beside tg-bench-ops's memcpy on as many threads. PyTorch's backward is the whole call
(y.backward(dy) with dy uniform in [-1, 1), or loss.backward() for the sum; x.grad set to None
before each forward), so it stands beside tg-bench-ops's bwd_call (and the softmax family's
fwdbwd: forward then backward, timed together); tg-bench-ops's bwd (the VJP alone) has no
PyTorch counterpart. Each side times one call per repeat, after two warm-up calls; median of
--reps. Prints one table: medians over the rounds, min-max over all runs, PyTorch/ours as the
median of the per-round ratios (> 1: ours is faster) with the rounds ours won, our GB/s and %
of the copy bandwidth tg-bench-ops measured, and PyTorch's GB/s for the same byte count.
PyTorch runs at its best: OMP_WAIT_POLICY=ACTIVE (its OpenMP pool spins, as tapegrad's does)
and glibc told to keep freed memory (MALLOC_MMAP_MAX_=0 and large trim/top-pad thresholds),
so that a fresh 64 MiB result costs no page faults; without these, on the 2-vCPU VM of
docs/performance.md, its exp takes ~200 ms instead of ~4.
LIST (comma-separated, default all) picks among exp, add, sum, softmax, log_softmax and
logsumexp.

With --gradcheck, the whole-graph gradient check instead:

    /usr/bin/python3 tools/bench_torch.py --gradcheck [--tg-gradcheck PATH] [--nets G-mlp,B-seed]
        [--modes full,fast] [--max-elements K] [--projections N] [--threads 1] [--reps 7]
        [--rounds 3] [--markdown]

times tools/tg-bench-gradcheck's tg_gradcheck (every element, or a seeded subset of K per
tensor, and fast mode with N projections per tensor, default 1) beside
torch.autograd.gradcheck (fast_mode=False and True, eps 1e-6, atol 1e-5, rtol 1e-3, its other
options at their defaults) on the same float64 networks, 784-256-128-10 with batch 4 and the
six parameters checked: G-mlp (tanh, sigmoid, identity, softmax cross-entropy) and B-seed
(tg-bench's: tanh, tanh, sigmoid, 1/(2m) sum (Y - A)^2). With --max-elements, PyTorch checks
the same number of elements per tensor: its inputs are then the chosen elements, scattered
into a copy of each full tensor at every run of the function (a 235146-element copy, as
tapegrad copies its inputs onto its tape at every run). Each side runs one untimed check,
then --reps timed ones, in rounds of alternating order like the networks; the table gives
medians over the rounds, min-max over all runs and PyTorch/ours, then per network the time of
the full check of every element (extrapolated from a subset by the function runs it needs,
1 + 2 per element) over the fast check's, on each side. Without --max-elements the full
check of every element takes minutes.

With --hvp, Hessian-vector products instead:

    /usr/bin/python3 tools/bench_torch.py --hvp [--tg-hvp build/tools/tg-bench-hvp]
        [--nets B-mnist,B-seed] [--dtypes f32,f64] [--threads 1,2] [--reps 7] [--rounds 3]
        [--markdown]

times tools/tg-bench-hvp (one H·v with respect to every parameter, from nothing: forward,
then tg_hvp forward-over-reverse and reverse-over-reverse; and tg_jvp over the recording
against the forward) beside torch.autograd.functional.hvp(loss, params, v) on the same
networks (B-mnist: tg-bench's 784-512-256-10 ReLU with softmax cross-entropy; B-seed:
784-256-128-10 tanh/sigmoid with the note's MSE; batch 128, v standard normal), in rounds of
alternating order. PyTorch/ours is given for each of our two modes.
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
    # examples/fashion-mnist-cnn's network (tg-bench's B-cnn), batch 64 of 28x28
    "B-cnn": (None, 64, "relu", "identity", "xent"),
    # B-cnn's convolutions alone (forward, dW, and dX for the second), from a fixed seed
    "B-conv1": (None, 64, "identity", "identity", "seed"),
    "B-conv2": (None, 64, "identity", "identity", "seed"),
    # sequence models: embedding 64 of a 64-symbol vocabulary, nn.LSTM(64, 256), T = 32,
    # nn.Linear(256, 64) and cross-entropy at every step; and one pre-norm transformer block
    # (nn.TransformerEncoderLayer, d 256, 4 heads, feed-forward 1024, GELU, no dropout) on
    # (16, 128, 256), MSE on its output
    "B-lstm": (None, 32, "identity", "identity", "xent"),
    "B-attn": (None, 16, "identity", "identity", "mse"),
}
LSTM_GEOM = (64, 64, 256, 32)  # vocabulary, embedding, hidden, steps
ATTN_GEOM = (256, 4, 1024, 128)  # d, heads, feed-forward, T
CONV_GEOM = {"B-conv1": (1, 32, 28), "B-conv2": (32, 64, 14)}  # in, out channels, size


def conv_flops(net, batch):
    cin, cout, hw = CONV_GEOM[net]
    return 2.0 * batch * hw * hw * cout * cin * 9 * (3 if net == "B-conv2" else 2)


def cnn_flops(batch):
    """tg-bench's count: 2 x multiply-adds; the first convolution needs no input gradient."""
    conv1, conv2 = batch * 784 * 32 * 9, batch * 196 * 64 * 288
    return 2.0 * (2 * conv1 + 3 * conv2 + 3 * batch * 3136 * 128 + 3 * batch * 128 * 10)


def lstm_flops(batch):
    """2 x multiply-adds of forward, dW and dX: x·W_ihᵀ, h·W_hhᵀ and the read-out."""
    vocab, emb, hid, steps = LSTM_GEOM
    return 2.0 * 3 * steps * batch * (emb * 4 * hid + hid * 4 * hid + hid * vocab)


def attn_flops(batch):
    """2 x multiply-adds of forward, dW and dX: the projections (q, k, v, out), q·kᵀ and P·v,
    and the feed-forward pair (the VJP's recomputed q·kᵀ is not counted)."""
    d, heads, ff, t = ATTN_GEOM
    mac = batch * t * (4 * d * d + 2 * d * ff) + batch * 2 * t * t * d
    return 2.0 * 3 * mac


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
    nn = torch.nn
    if net in CONV_GEOM:
        cin, cout, hw = CONV_GEOM[net]
        model = nn.Conv2d(cin, cout, 3, padding=1).to(dt)
        dims = (cin * hw * hw, 0, 0, 10)
        x = torch.rand(batch, cin, hw, hw, dtype=dt, requires_grad=net == "B-conv2")
        seed = torch.rand(batch, cout, hw, hw, dtype=dt)
    elif net == "B-lstm":
        vocab, emb, hid, steps = LSTM_GEOM

        class Lstm(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(vocab, emb)
                self.rnn = nn.LSTM(emb, hid)
                self.out = nn.Linear(hid, vocab)

            def forward(self, idx):
                h, _ = self.rnn(self.embed(idx))
                return self.out(h.reshape(-1, hid))

        model = Lstm().to(dt)
        g = torch.Generator().manual_seed(42)
        x = torch.randint(0, vocab, (steps, batch), generator=g)
        dims = (0, 0, 0, vocab)
    elif net == "B-attn":
        d, heads, ff, t = ATTN_GEOM
        model = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True).to(dt)
        x = torch.rand(batch, t, d, dtype=dt)
        dims = (0, 0, 0, d)
    elif dims is None:  # B-cnn
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(3136, 128), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(128, 10)).to(dt)
        dims = (784, 128, 10, 10)
        x = torch.rand(batch, 1, 28, 28, dtype=dt)
    else:
        layers = []
        for i in range(3):
            layers.append(torch.nn.Linear(dims[i], dims[i + 1]))
            layers.append(acts[out if i == 2 else hidden]())
        model = torch.nn.Sequential(*layers).to(dt)
        x = torch.rand(batch, dims[0], dtype=dt)
    y = torch.rand(*((batch, ATTN_GEOM[3], dims[3]) if net == "B-attn" else (batch, dims[3])),
                   dtype=dt)
    labels = torch.arange(batch * (LSTM_GEOM[3] if net == "B-lstm" else 1)) % dims[3]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mse = torch.nn.MSELoss()
    xent = torch.nn.CrossEntropyLoss()

    def step():
        a = model(x)
        if loss_kind == "seed":
            a.backward(seed)
            opt.step()
            opt.zero_grad()
            if x.grad is not None:
                x.grad = None
            return
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
    flops = (conv_flops(net, batch) if net in CONV_GEOM else
             cnn_flops(batch) if net == "B-cnn" else lstm_flops(batch) if net == "B-lstm" else
             attn_flops(batch) if net == "B-attn" else step_flops(dims, batch))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"net={net} dtype={dtype} threads={threads} median_us={med:.2f} min_us={min(us):.2f} "
          f"max_us={max(us):.2f} "
          f"gflops={flops / med * 1e-3:.2f} "
          f"peak_rss_kib={rss} torch={torch.__version__}", flush=True)


# ---- --ops: the memory-bound ops of tools/tg-bench-ops ----
OPS_ALL = ("exp", "add", "sum", "softmax", "log_softmax", "logsumexp")


def parse_size(text):
    """'16M' -> 16777216 (binary suffixes, as tg-bench-ops)."""
    mul = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:].lower(), 1)
    return int(float(text[:-1] if mul > 1 else text) * mul)


def torch_ops_child(threads, size, softmax, reps, op_list):
    """Prints `result op=… pass=… ms=…` lines in tg-bench-ops's format for the same rows."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(42)
    n = parse_size(size)
    r, c = (int(v) for v in softmax.lower().split("x"))
    ops = OPS_ALL if op_list in (None, "all") else tuple(op_list.split(","))

    def timed(setup, call):
        """Median, min, max ms of `reps` calls of call(setup()) after two warm-up calls; only
        call() is timed."""
        t = []
        for i in range(reps + 2):
            state = setup()
            s = time.perf_counter()
            out = call(state)
            e = time.perf_counter()
            del out, state  # freed after the clock stopped
            if i >= 2:
                t.append((e - s) * 1e3)
        return statistics.median(t), min(t), max(t)

    def emit(op, pas, shape, stats):
        print(f"result op={op} pass={pas} shape={shape} threads={threads} ms={stats[0]:.4f} "
              f"min_ms={stats[1]:.4f} max_ms={stats[2]:.4f} status=ok", flush=True)

    def uniform(*shape):
        return torch.rand(*shape, dtype=torch.float32) * 2 - 1

    def fresh(*leaves):
        for leaf in leaves:
            leaf.grad = None

    # each group's tensors are locals of its function, freed before the next group
    def copy_rows():
        src, dst = uniform(n), torch.zeros(n, dtype=torch.float32)
        emit("copy", f"{threads}t", n, timed(lambda: None, lambda _: dst.copy_(src)))

    def elementwise_rows():
        x, b, dy = uniform(n), uniform(n), uniform(n)
        xg, bg = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
        ew = {
            "exp": (lambda: torch.exp(x), lambda: torch.exp(xg), (xg,), dy),
            "add": (lambda: x + b, lambda: xg + bg, (xg, bg), dy),
            "sum": (lambda: x.sum(), lambda: xg.sum(), (xg,), None),
        }
        for op, (fwd, fwd_g, leaves, seed) in ew.items():
            if op not in ops:
                continue
            emit(op, "fwd", n, timed(lambda: None, lambda _, fwd=fwd: fwd()))

            def setup_bwd(fwd_g=fwd_g, leaves=leaves):
                fresh(*leaves)
                return fwd_g()
            emit(op, "bwd_call", n, timed(setup_bwd, lambda y, seed=seed: y.backward(seed)))

    def softmax_rows():
        sx, sdy, rdy = uniform(r, c), uniform(r, c), uniform(r)
        sxg = sx.clone().requires_grad_(True)
        family = {
            "softmax": (lambda v: torch.softmax(v, -1), sdy),
            "log_softmax": (lambda v: torch.log_softmax(v, -1), sdy),
            "logsumexp": (lambda v: torch.logsumexp(v, -1), rdy),
        }
        for op, (f, seed) in family.items():
            if op not in ops:
                continue
            emit(op, "fwd", f"{r}x{c}", timed(lambda: None, lambda _, f=f: f(sx)))

            def fwdbwd(_, f=f, seed=seed):
                y = f(sxg)
                y.backward(seed)
                return y
            emit(op, "fwdbwd", f"{r}x{c}", timed(lambda: fresh(sxg), fwdbwd))

    copy_rows()
    elementwise_rows()
    softmax_rows()
    print(f"# torch {torch.__version__} threads={torch.get_num_threads()}", flush=True)


def find_tool(name, given, option, builds=("build-perf", "build", "build-rel")):
    """The path given, or tools/NAME in the first of the build folders that has it."""
    if given:
        return given
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for b in builds:
        p = os.path.join(root, b, "tools", name)
        if os.access(p, os.X_OK):
            return p
    sys.exit(f"bench_torch.py: {name} not found; pass {option} PATH")


def run_ops(a, torch_env):
    """The --ops comparison: tg-bench-ops and a PyTorch child, in rounds, per thread count."""
    tg = find_tool("tg-bench-ops", a.tg_ops, "--tg-ops",
                   ("build-perf", "build", "build-rel", "build-bench"))
    op_list = None if a.ops == "all" else a.ops
    common = ["--size", a.size, "--softmax", a.softmax, "--repeat", str(a.reps)]
    header = []

    def results(out):
        res = {}
        for line in out.splitlines():
            if line.startswith("result "):
                d = parse(line)
                res[(d["op"], d["pass"])] = d
        return res

    def run_ours(th):
        cmd = [tg, "--threads", th] + common + (["--ops", op_list] if op_list else [])
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode not in (0, 1):  # 1: a check failed; the times are still printed
            sys.exit(f"bench_torch.py: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
        if p.returncode == 1:
            print(f"# tg-bench-ops: a check failed:\n{p.stderr}", file=sys.stderr, flush=True)
        if not header:
            header.extend(l for l in p.stdout.splitlines() if l.startswith("# ")
                          and not l.startswith(("# threads", "# copy reference")))
        return results(p.stdout)

    def run_torch(th):
        env = dict(torch_env, OMP_NUM_THREADS=th, OPENBLAS_NUM_THREADS=th, MKL_NUM_THREADS=th)
        # PyTorch at its best: its OpenMP threads spin between calls instead of sleeping
        # (woken by the scheduler tick, a sleeping pool adds milliseconds per call on this
        # kind of VM), and glibc keeps freed memory instead of returning each 64 MiB result
        # to the kernel (which makes every new output 16384 page faults). tapegrad needs
        # neither: its pool spins and its tape arena is reused. Both are printed below.
        env.update(OMP_WAIT_POLICY="ACTIVE", MALLOC_MMAP_MAX_="0",
                   MALLOC_TRIM_THRESHOLD_=str(1 << 36), MALLOC_TOP_PAD_=str(1 << 30))
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--ops-child", th,
                              "--ops", a.ops] + common[:4] + ["--reps", str(a.reps)],
                             env=env, check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("# torch"):
                header.append(line)
        return results(out)

    ours, theirs, ratios, order = {}, {}, {}, []
    for th in a.threads.split(","):
        for rnd in range(max(1, a.rounds)):
            if rnd % 2 == 0:
                o = run_ours(th)
                t = run_torch(th)
            else:
                t = run_torch(th)
                o = run_ours(th)
            for key, d in o.items():
                k = (th,) + key
                if k not in ours:
                    order.append(k)
                ours.setdefault(k, []).append(d)
                if key in t and d.get("status") == "ok":
                    theirs.setdefault(k, []).append(t[key])
                    ratios.setdefault(k, []).append(float(t[key]["ms"]) / float(d["ms"]))
        print(f"# ops, {th} thread(s): {max(1, a.rounds)} round(s) done", file=sys.stderr,
              flush=True)

    hdr = ["op", "pass", "shape", "thr", "tapegrad ms (min-max)", "PyTorch ms (min-max)",
           "PyTorch/ours (won)", "ours GB/s", "ours % copy", "PyTorch GB/s", "allocs", "check"]
    rows = []
    for k in order:
        runs = ours[k]
        ok = [r for r in runs if r.get("status") == "ok"]
        if not ok:
            rows.append([k[1], k[2], runs[0].get("shape", ""), k[0],
                         runs[0].get("status", "?"), "", "", "", "", "", "", ""])
            continue
        om = statistics.median(float(r["ms"]) for r in ok)
        olo, ohi = min(float(r["min_ms"]) for r in ok), max(float(r["max_ms"]) for r in ok)
        nbytes = float(ok[0]["bytes"])
        gbs = statistics.median(float(r["gbs"]) for r in ok)
        pct = statistics.median(float(r["pct"]) for r in ok)
        cell_t, cell_r, cell_tg = "-", "-", "-"
        if k in theirs:
            tr = theirs[k]
            tm = statistics.median(float(r["ms"]) for r in tr)
            tlo, thi = min(float(r["min_ms"]) for r in tr), max(float(r["max_ms"]) for r in tr)
            won = sum(x > 1 for x in ratios[k])
            cell_t = f"{tm:.3f} ({tlo:.3f}-{thi:.3f})"
            cell_r = f"{statistics.median(ratios[k]):.2f}x ({won}/{len(ratios[k])})"
            cell_tg = f"{nbytes / (tm * 1e-3) * 1e-9:.1f}"
        checks = {r.get("check", "-") for r in ok}
        rows.append([k[1], k[2], ok[0]["shape"], k[0], f"{om:.3f} ({olo:.3f}-{ohi:.3f})", cell_t,
                     cell_r, f"{gbs:.1f}", f"{pct:.1f}", cell_tg,
                     max(ok, key=lambda r: float(r["allocs"]))["allocs"],
                     "FAIL" if "FAIL" in checks else ",".join(sorted(checks))])
    for line in dict.fromkeys(header):  # the first run's machine lines, then torch's
        print(line)
    print_table(hdr, rows, a.markdown)
    print(f"# PyTorch: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for it, OMP_WAIT_POLICY=ACTIVE, "
          f"MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2^36 MALLOC_TOP_PAD_=2^30 (no page faults "
          f"for its fresh outputs); tapegrad {tg}; "
          f"{max(1, a.rounds)} round(s) per row, order alternating; PyTorch's backward rows are "
          f"the whole y.backward() call, beside ours bwd_call / fwdbwd")
    return 0


# ---- --gradcheck: the whole-graph gradient check, tools/tg-bench-gradcheck beside PyTorch ----
GC_NETS = {
    # name: (activations of the three layers, loss)
    "G-mlp": (("tanh", "sigmoid", "identity"), "xent"),
    "B-seed": (("tanh", "tanh", "sigmoid"), "mse_half"),
}
GC_DIMS = (784, 256, 128, 10)
GC_BATCH = 4


def torch_gradcheck_child(net, mode, max_elements, threads, reps):
    """Prints `net=… mode=… median_ms=…` for torch.autograd.gradcheck on one network."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(42)
    dt = torch.float64
    act_names, loss_kind = GC_NETS[net]
    acts = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "identity": lambda v: v}
    layers = [torch.nn.Linear(GC_DIMS[i], GC_DIMS[i + 1]).to(dt) for i in range(3)]
    params = [p.detach().clone() for l in layers for p in (l.weight, l.bias)]
    x = torch.rand(GC_BATCH, GC_DIMS[0], dtype=dt)
    y = torch.rand(GC_BATCH, GC_DIMS[3], dtype=dt)
    labels = torch.arange(GC_BATCH) % GC_DIMS[3]

    def loss(ps):
        h = x
        for i in range(3):
            h = acts[act_names[i]](F.linear(h, ps[2 * i], ps[2 * i + 1]))
        if loss_kind == "xent":
            return F.cross_entropy(h, labels)
        return ((h - y) ** 2).sum() / (2 * GC_BATCH)

    # the checked inputs: each parameter whole, or (a subset) K of its elements, seeded
    gen = torch.Generator().manual_seed(7)
    subsets, inputs, checked = [], [], 0
    for p in params:
        n = p.numel()
        if mode == "full" and max_elements and n > max_elements:
            idx = torch.randperm(n, generator=gen)[:max_elements].sort().values
            subsets.append(idx)
            inputs.append(p.reshape(-1)[idx].clone().requires_grad_(True))
        else:
            subsets.append(None)
            inputs.append(p.clone().requires_grad_(True))
        checked += inputs[-1].numel()

    def fn(*ins):
        ps = [v if idx is None else p.reshape(-1).index_put((idx,), v).view_as(p)
              for p, idx, v in zip(params, subsets, ins)]
        return loss(ps)

    t = []
    ok = True
    for i in range(reps + 1):  # the first untimed
        s = time.perf_counter()
        ok &= torch.autograd.gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-5, rtol=1e-3,
                                       fast_mode=mode == "fast")
        e = time.perf_counter()
        if i:
            t.append((e - s) * 1e3)
    print(f"net={net} mode={mode} checked={checked if mode == 'full' else len(inputs)} "
          f"median_ms={statistics.median(t):.3f} min_ms={min(t):.3f} max_ms={max(t):.3f} "
          f"pass={int(ok)} threads={torch.get_num_threads()} torch={torch.__version__}",
          flush=True)


def run_gradcheck(a, torch_env):
    """The --gradcheck comparison: tg-bench-gradcheck and a PyTorch child per network and
    mode, in rounds of alternating order."""
    tg = find_tool("tg-bench-gradcheck", a.tg_gradcheck, "--tg-gradcheck")
    nets = a.nets if a.nets != NETS_DEFAULT else "G-mlp,B-seed"
    bad = set(nets.split(",")) - set(GC_NETS)
    if bad:
        sys.exit(f"bench_torch.py: --gradcheck: unknown network {','.join(sorted(bad))}")
    th = a.threads.split(",")[0]
    sub = ["--max-elements", str(a.max_elements)] if a.max_elements else []

    def run_ours(net, mode):
        cmd = [tg, "--nets", net, "--modes", mode, "--projections", str(a.projections),
               "--reps", str(a.reps), "--threads", th] + sub
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode not in (0, 1):
            sys.exit(f"bench_torch.py: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
        return next(parse(l) for l in p.stdout.splitlines() if l.startswith("net="))

    def run_torch(net, mode):
        env = dict(torch_env, OMP_NUM_THREADS=th, OPENBLAS_NUM_THREADS=th, MKL_NUM_THREADS=th)
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--gradcheck-child",
                              net, mode, str(a.max_elements or 0), th, "--reps", str(a.reps)],
                             env=env, check=True, capture_output=True, text=True).stdout
        return next(parse(l) for l in out.splitlines() if l.startswith("net="))

    ours, theirs, ratios, keys = {}, {}, {}, []
    modes = "full,fast" if a.modes == "both" else a.modes
    for net in nets.split(","):
        for mode in modes.split(","):
            key = (net, mode)
            keys.append(key)
            for rnd in range(max(1, a.rounds)):
                if rnd % 2 == 0:
                    o, t = run_ours(*key), run_torch(*key)
                else:
                    t = run_torch(*key)
                    o = run_ours(*key)
                ours.setdefault(key, []).append(o)
                theirs.setdefault(key, []).append(t)
                ratios.setdefault(key, []).append(float(t["median_ms"]) / float(o["median_ms"]))
            print(f"# {net} {mode}: PyTorch/ours per round "
                  + " ".join(f"{r:.2f}" for r in ratios[key]), file=sys.stderr, flush=True)

    def summary(runs):
        return (statistics.median(float(r["median_ms"]) for r in runs),
                min(float(r["min_ms"]) for r in runs), max(float(r["max_ms"]) for r in runs))

    hdr = ["network", "mode", "checked", "evals", "tapegrad ms (min-max)", "PyTorch ms (min-max)",
           "PyTorch/ours (won)", "ours µs/eval", "pass ours/PyTorch"]
    rows, med = [], {}
    for k in keys:
        (om, olo, ohi), (tm, tlo, thi) = summary(ours[k]), summary(theirs[k])
        med[k] = (om, tm)
        o0 = ours[k][0]
        what = (f"{o0['checked']} of {o0['elements']}" if k[1] == "full"
                else f"{a.projections}/tensor (PyTorch 1)")
        won = sum(r > 1 for r in ratios[k])
        rows.append([k[0], k[1], what, o0["evals"], f"{om:.2f} ({olo:.2f}-{ohi:.2f})",
                     f"{tm:.2f} ({tlo:.2f}-{thi:.2f})",
                     f"{statistics.median(ratios[k]):.2f}x ({won}/{len(ratios[k])})",
                     o0["per_eval_us"],
                     f"{min(int(r['pass']) for r in ours[k])}/"
                     f"{min(int(r['pass']) for r in theirs[k])}"])
    print_table(hdr, rows, a.markdown)
    for net in nets.split(","):
        full, fast = (net, "full"), (net, "fast")
        if full not in med or fast not in med:
            continue
        o0 = ours[full][0]
        # evaluations of a full check of every element over those of the one timed
        scale = (1 + 2 * int(o0["elements"])) / float(o0["evals"])
        (of, tf), (oq, tq) = med[full], med[fast]
        if scale == 1:
            print(f"# {net}: full check of every element: tapegrad {of / 1e3:.1f} s, PyTorch "
                  f"{tf / 1e3:.1f} s; full/fast: tapegrad {of / oq:.0f}x, PyTorch {tf / tq:.0f}x")
        else:  # PyTorch re-runs the whole function per evaluation, so its time scales; ours
            # replays only what the perturbed tensor reaches, so it does not (run it whole)
            print(f"# {net}: full check of every element, PyTorch's extrapolated from the "
                  f"subset by evaluations: {tf * scale / 1e3:.1f} s (tapegrad's needs a run "
                  f"without --max-elements)")
    print(f"# PyTorch {next(iter(theirs.values()))[0]['torch']}, OPENBLAS_CORETYPE and "
          f"OPENBLAS_L2_SIZE unset for it; {th} thread(s); tapegrad {tg}; fast mode: tapegrad "
          f"{a.projections} projection(s) per tensor, PyTorch 1; {max(1, a.rounds)} round(s) "
          f"per row, order alternating")
    return 0


HVP_NETS = {"B-mnist": ((784, 512, 256, 10), "relu", "identity", "xent"),
            "B-seed": ((784, 256, 128, 10), "tanh", "sigmoid", "mse_half")}


def torch_hvp_child(net, dtype, threads, reps, min_time):
    """Prints `net=… median_us=…` for torch.autograd.functional.hvp on one network."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(42)
    dt = torch.float32 if dtype == "f32" else torch.float64
    dims, hidden, out, loss_kind = HVP_NETS[net]
    acts = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
            "identity": lambda v: v}
    layers = [torch.nn.Linear(dims[i], dims[i + 1]).to(dt) for i in range(3)]
    params = tuple(p.detach().clone() for l in layers for p in (l.weight, l.bias))
    x = torch.rand(128, dims[0], dtype=dt)
    y = torch.rand(128, dims[3], dtype=dt)
    labels = torch.arange(128) % dims[3]
    v = tuple(torch.randn_like(p) for p in params)

    def loss(*ps):
        h = x
        for i in range(3):
            h = acts[hidden if i < 2 else out](F.linear(h, ps[2 * i], ps[2 * i + 1]))
        if loss_kind == "xent":
            return F.cross_entropy(h, labels)
        return ((h - y) ** 2).sum() / (2 * 128)

    def once():
        torch.autograd.functional.hvp(loss, params, v)

    t0 = time.perf_counter()
    warm = 0
    while warm < 2 or (time.perf_counter() - t0 < 0.2 and warm < 50):
        once()
        warm += 1
    iters = max(1, int(min_time / ((time.perf_counter() - t0) / warm)))
    us = []
    for _ in range(reps):
        s = time.perf_counter()
        for _ in range(iters):
            once()
        us.append((time.perf_counter() - s) / iters * 1e6)
    print(f"net={net} dtype={dtype} threads={threads} median_us={statistics.median(us):.1f} "
          f"min_us={min(us):.1f} max_us={max(us):.1f} torch={torch.__version__}", flush=True)


def run_hvp(a, torch_env):
    """The --hvp comparison: tg-bench-hvp and a PyTorch child per configuration, in rounds
    of alternating order."""
    tg = find_tool("tg-bench-hvp", a.tg_hvp, "--tg-hvp")
    nets = a.nets if a.nets != NETS_DEFAULT else "B-mnist,B-seed"
    bad = set(nets.split(",")) - set(HVP_NETS)
    if bad:
        sys.exit(f"bench_torch.py: --hvp: unknown network {','.join(sorted(bad))}")

    def run_ours(net, dtype, th):
        cmd = [tg, "--nets", net, "--dtypes", dtype, "--threads", th, "--reps", str(a.reps),
               "--min-time", str(a.min_time)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return next(parse(l) for l in out.splitlines() if l.startswith("net="))

    def run_torch(net, dtype, th):
        env = dict(torch_env, OMP_NUM_THREADS=th, OPENBLAS_NUM_THREADS=th, MKL_NUM_THREADS=th)
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--hvp-child", net,
                              dtype, th, "--reps", str(a.reps), "--min-time", str(a.min_time)],
                             env=env, check=True, capture_output=True, text=True).stdout
        return next(parse(l) for l in out.splitlines() if l.startswith("net="))

    rows = []
    for net in nets.split(","):
        for dtype in a.dtypes.split(","):
            for th in a.threads.split(","):
                key = (net, dtype, th)
                ours, theirs, r_for, r_ror = [], [], [], []
                for rnd in range(max(1, a.rounds)):
                    if rnd % 2 == 0:
                        o, t = run_ours(*key), run_torch(*key)
                    else:
                        t = run_torch(*key)
                        o = run_ours(*key)
                    ours.append(o)
                    theirs.append(t)
                    r_for.append(float(t["median_us"]) / float(o["hvp_for_us"]))
                    r_ror.append(float(t["median_us"]) / float(o["hvp_ror_us"]))
                print(f"# {net} {dtype} {th} thread(s): PyTorch/ours per round, forward over "
                      f"reverse " + " ".join(f"{r:.2f}" for r in r_for) + "; reverse over "
                      "reverse " + " ".join(f"{r:.2f}" for r in r_ror), file=sys.stderr,
                      flush=True)
                med = lambda runs, k: statistics.median(float(r[k]) for r in runs)
                rows.append([net, dtype, th, f"{med(ours, 'forward_us'):.0f}",
                             f"{med(ours, 'jvp_us'):.0f} ({med(ours, 'jvp_over_forward'):.2f}x)",
                             f"{med(ours, 'hvp_for_us'):.0f}", f"{med(ours, 'hvp_ror_us'):.0f}",
                             f"{med(theirs, 'median_us'):.0f}",
                             f"{statistics.median(r_for):.2f}x ({sum(r > 1 for r in r_for)}/"
                             f"{len(r_for)})",
                             f"{statistics.median(r_ror):.2f}x ({sum(r > 1 for r in r_ror)}/"
                             f"{len(r_ror)})",
                             max(ours, key=lambda r: float(r["hvp_agree"]))["hvp_agree"]])
    print_table(["network", "dtype", "thr", "forward µs", "tg_jvp µs (/forward)",
                 "tg_hvp fwd-over-rev µs", "tg_hvp rev-over-rev µs", "PyTorch hvp µs",
                 "PyTorch/ours fwd-over-rev (won)", "PyTorch/ours rev-over-rev (won)",
                 "modes differ"], rows, a.markdown)
    print(f"# PyTorch {theirs[0]['torch']} torch.autograd.functional.hvp, OPENBLAS_CORETYPE "
          f"and OPENBLAS_L2_SIZE unset for it; tapegrad {tg}; {max(1, a.rounds)} round(s) per "
          f"row, order alternating; medians over the rounds")
    return 0


def print_table(hdr, rows, markdown):
    if markdown:
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


def parse(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


NETS_DEFAULT = "B-small,B-seed,B-mnist,B-wide,B-cnn"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tg", default=None, help="path to tg-bench (default: build*/tools)")
    ap.add_argument("--nets", default=NETS_DEFAULT,
                    help="networks (with --gradcheck: among G-mlp,B-seed, default both)")
    ap.add_argument("--dtypes", default="f32,f64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", "--repeat", dest="reps", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--rounds", type=int, default=3,
                    help="(tapegrad, PyTorch) pairs per configuration, order alternating")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--ops", nargs="?", const="all", default=None, metavar="LIST",
                    help="the tg-bench-ops rows instead of the networks (LIST: comma-separated "
                    "among " + ",".join(OPS_ALL) + "; default all)")
    ap.add_argument("--tg-ops", default=None,
                    help="path to tg-bench-ops (default: build*/tools)")
    ap.add_argument("--size", default="16M", help="--ops: elements of the exp/add/sum tensors")
    ap.add_argument("--softmax", default="256x32768", help="--ops: the softmax family's shape")
    ap.add_argument("--gradcheck", action="store_true",
                    help="the whole-graph gradient check (tools/tg-bench-gradcheck) beside "
                    "torch.autograd.gradcheck instead of training steps")
    ap.add_argument("--tg-gradcheck", default=None,
                    help="path to tg-bench-gradcheck (default: build*/tools)")
    ap.add_argument("--modes", default="full,fast", help="--gradcheck: full, fast or both")
    ap.add_argument("--max-elements", type=int, default=0, metavar="K",
                    help="--gradcheck: the full check compares K elements per tensor (a seeded "
                    "subset) on both sides; default every element (minutes)")
    ap.add_argument("--projections", type=int, default=1,
                    help="--gradcheck: tapegrad's fast-mode projections per tensor (PyTorch's "
                    "fast_mode draws 1); default 1")
    ap.add_argument("--hvp", action="store_true",
                    help="Hessian-vector products beside torch.autograd.functional.hvp")
    ap.add_argument("--tg-hvp", default=None, help="path to tg-bench-hvp (default: build*/tools)")
    ap.add_argument("--hvp-child", nargs=3, metavar=("NET", "DTYPE", "THREADS"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=3, metavar=("NET", "DTYPE", "THREADS"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--gradcheck-child", nargs=4, metavar=("NET", "MODE", "K", "THREADS"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--ops-child", metavar="THREADS", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        torch_child(a.child[0], a.child[1], int(a.child[2]), a.reps, a.min_time)
        return 0
    if a.ops_child:
        torch_ops_child(int(a.ops_child), a.size, a.softmax, a.reps, a.ops)
        return 0
    if a.hvp_child:
        torch_hvp_child(a.hvp_child[0], a.hvp_child[1], int(a.hvp_child[2]), a.reps, a.min_time)
        return 0
    if a.hvp:
        return run_hvp(a, {k: v for k, v in os.environ.items()
                           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")})
    if a.gradcheck_child:
        net, mode, k, th = a.gradcheck_child
        torch_gradcheck_child(net, mode, int(k), int(th), a.reps)
        return 0
    if a.gradcheck:
        if a.threads == "1,2":  # the networks' default; the check is timed on one thread
            a.threads = "1"
        return run_gradcheck(a, {k: v for k, v in os.environ.items()
                                 if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")})
    if a.ops:
        bad = set(a.ops.split(",")) - set(OPS_ALL) - {"all"}
        if bad:
            sys.exit(f"bench_torch.py: --ops: unknown {','.join(sorted(bad))}")
        return run_ops(a, {k: v for k, v in os.environ.items()
                           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")})

    tg = find_tool("tg-bench", a.tg, "--tg")

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
    print_table(hdr, rows, a.markdown)
    if theirs:
        print(f"# PyTorch {next(iter(theirs.values()))[0]['torch']}, OPENBLAS_CORETYPE and "
              f"OPENBLAS_L2_SIZE unset for it; tapegrad {tg}; {max(1, a.rounds)} round(s) "
              f"per row, order alternating")
    return 0


if __name__ == "__main__":
    sys.exit(main())
