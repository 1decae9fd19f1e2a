#!/usr/bin/python3
"""tapegrad's gradients against PyTorch's autograd, float64, on random networks.

    torch_ref.py REFDUMP [--seeds N] [--first S] [-v]

For each seed, runs `REFDUMP SEED` (tests/reference/refdump.c: a random network built through
tapegrad's public API, forward and backward in float64, printed as a trace), replays the trace
with torch ops in float64, lets torch.autograd compute the gradients, and compares the loss and
every leaf gradient. Exit 77 (meson's "skipped") when torch is not installed.

Tolerance: both sides compute the same float64 formulas in a different order (GEMM blocking,
fused bias+activation, 16-lane sums, tapegrad's own exp at <= 1.5 ulp), so they agree to a few
ulp of the largest intermediate, not of each element. An element passes when
|ours - torch| <= 1e-10 * (1 + max |torch grad| of that leaf): tens of thousands of ulp of
headroom for rounding, while any wrong derivative rule (a missing factor, sign, transpose or
broadcast sum) shows up as an O(1) relative error. Measured: 2000 seeds agree to <= 3e-16
(scaled); planted bugs fail: sub's second-operand derivative +1 instead of -1 (60 of 100 seeds
mismatch) and softplus's derivative off by a factor 1 + 1e-7 (114 mismatching leaves in 100
seeds). Not reached from here: the generic broadcast loop (3-D/4-D, outer products), which
test-ops covers with finite differences, and the tensor-algebra ops at ranks 1-4, which
torch_ref_ops.py (on refops.c's graphs) compares the same way.
"""
import argparse
import math
import subprocess
import sys

try:
    import torch
except ImportError:
    print("skipped: python3-torch not installed: run tools/install-deps.sh --all")
    sys.exit(77)

torch.set_default_dtype(torch.float64)
REL_TOL = 1e-10


def scaled_error(ours, ref):
    """(worst, first): the largest |ours - ref| / (1 + max |ref|) over the elements, and the
    index of the first element over REL_TOL (None if none). Equal values (infinities
    included) and NaN against NaN agree; NaN against a number does not. Shared with
    torch_ref_ops.py."""
    scale = 1 + max((abs(b) for b in ref if math.isfinite(b)), default=0.0)
    worst, first = 0.0, None
    for k, (a, b) in enumerate(zip(ours, ref)):
        err = 0.0 if a == b or (a != a and b != b) else abs(a - b) / scale
        if not err <= REL_TOL:
            err = math.inf if err != err else err
            first = k if first is None else first
        worst = max(worst, err)
    return worst, first


def act(name, x):
    if name == "identity":
        return x
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "relu":
        return torch.relu(x)
    if name == "leaky_relu":
        return torch.nn.functional.leaky_relu(x, 0.01)
    if name == "softplus":
        return torch.nn.functional.softplus(x)
    if name == "gelu":
        return torch.nn.functional.gelu(x)  # exact erf form, as tapegrad's
    raise ValueError("unknown activation " + name)


def replay(trace):
    t = {}
    leaves = {}
    labels = None
    loss_id = loss_value = None
    grads = {}
    for line in trace.splitlines():
        f = line.split()
        if not f:
            continue
        kind = f[0]
        if kind == "leaf":
            i, r, c = int(f[1]), int(f[2]), int(f[3])
            v = torch.tensor([float(x) for x in f[4:]]).reshape(r, c).requires_grad_(True)
            t[i] = leaves[i] = v
        elif kind == "labels":
            labels = torch.tensor([int(x) for x in f[2:]], dtype=torch.long)
        elif kind == "op":
            i, name, r, c = int(f[1]), f[2], int(f[3]), int(f[4])
            colon = f.index(":")
            attr = f[5:colon]
            ins = [t[int(x)] for x in f[colon + 1:]]
            if name == "matmul_t":
                a, b = ins
                a = a.T if attr[0] == "1" else a
                b = b.T if attr[1] == "1" else b
                y = a @ b
            elif name == "bias_act":
                y = act(attr[0], ins[0] + ins[1])
            elif name == "act":
                y = act(attr[0], ins[0])
            elif name == "add":
                y = ins[0] + ins[1]
            elif name == "sub":
                y = ins[0] - ins[1]
            elif name == "mul":
                y = ins[0] * ins[1]
            elif name == "scale":
                y = float(attr[0]) * ins[0]
            elif name == "transpose":
                y = ins[0].T
            elif name == "mse_half":
                a, yv = ins
                m = a.shape[int(attr[0])]
                y = ((yv - a) ** 2).sum() / (2 * m)
            elif name == "mse":
                y = ((ins[0] - ins[1]) ** 2).mean()
            elif name == "softmax_xent":
                s = ins[0] if attr[0] == "1" else ins[0].T  # (examples x classes)
                y = torch.nn.functional.cross_entropy(s, labels, reduction="mean")
            elif name == "sum_axis":
                y = ins[0].sum(dim=int(attr[0]), keepdim=True)
            elif name == "mean_axis":
                y = ins[0].mean(dim=int(attr[0]), keepdim=True)
            elif name == "mean":
                y = ins[0].mean()
            elif name == "sum":
                y = ins[0].sum()
            else:
                raise ValueError("unknown op " + name)
            y = y.reshape(r, c)
            t[i] = y
        elif kind == "loss":
            loss_id, loss_value = int(f[1]), float(f[2])
        elif kind == "grad":
            grads[int(f[1])] = [float(x) for x in f[2:]]
    return t, leaves, loss_id, loss_value, grads


def check(refdump, seed, verbose):
    out = subprocess.run([refdump, str(seed)], capture_output=True, text=True)
    if out.returncode != 0:
        return [f"seed {seed}: refdump failed ({out.returncode}): {out.stderr.strip()}"]
    t, leaves, loss_id, loss_value, grads = replay(out.stdout)
    loss = t[loss_id].reshape(())
    loss.backward()
    errors = []
    worst = 0.0
    ref_loss = loss.item()
    if abs(loss_value - ref_loss) > REL_TOL * (1 + abs(ref_loss)):
        errors.append(f"seed {seed}: loss {loss_value!r} vs torch {ref_loss!r}")
    for i, v in leaves.items():
        ref = v.grad.reshape(-1).tolist() if v.grad is not None else [0.0] * v.numel()
        ours = grads.get(i)
        if ours is None or len(ours) != len(ref):
            errors.append(f"seed {seed}: leaf {i}: gradient missing or wrong size")
            continue
        err, k = scaled_error(ours, ref)
        worst = max(worst, err)
        if k is not None:
            errors.append(f"seed {seed}: leaf {i} {tuple(v.shape)} element {k}: "
                          f"ours {ours[k]!r} vs torch {ref[k]!r}")
    if verbose:
        print(f"seed {seed}: {len(leaves)} leaves, worst scaled error {worst:.2e}")
    return errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("refdump")
    ap.add_argument("--seeds", type=int, default=300)
    ap.add_argument("--first", type=int, default=1)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    failures = []
    for seed in range(args.first, args.first + args.seeds):
        failures += check(args.refdump, seed, args.verbose)
    for f in failures[:20]:
        print(f)
    print(f"{args.seeds} random networks against PyTorch {torch.__version__} (float64): "
          f"{len(failures)} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
