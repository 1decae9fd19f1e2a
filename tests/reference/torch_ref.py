#!/usr/bin/python3
"""tapegrad's gradients against PyTorch's autograd, float64, on random networks.

    torch_ref.py REFDUMP [--seeds N] [--first S] [-v]

For each seed, runs `REFDUMP SEED` (tests/reference/refdump.c: a random network built through
tapegrad's public API, forward and backward in float64, printed as a trace), replays the trace
with torch ops in float64, lets torch.autograd compute the gradients, and compares the loss,
every leaf gradient and H·v in both of tg_hvp's modes. Exit 77 (meson's "skipped") when torch
is not installed.

Tolerance: both sides compute the same float64 formulas in a different order (GEMM blocking,
fused bias+activation, 16-lane sums, tapegrad's own exp at <= 1.5 ulp), so they agree to a few
ulp of the largest intermediate, not of each element. An element passes when
|ours - torch| <= 1e-10 * (1 + max |torch grad| of that leaf): tens of thousands of ulp of
headroom for rounding, while any wrong derivative rule (a missing factor, sign, transpose or
broadcast sum) shows up as an O(1) relative error. Measured: 2000 seeds agree to <= 3e-16
(scaled); planted bugs fail: sub's second-operand derivative +1 instead of -1 (60 of 100 seeds
mismatch) and softplus's derivative off by a factor 1 + 1e-7 (114 mismatching leaves in 100
seeds).

H·v (the `dir`, `hvp_for`, `hvp_ror` lines: the Hessian of the loss w.r.t. all leaves jointly
times a standard normal direction) against torch's double backward on the replayed network,
relative to each leaf's largest element (HVP_TOL says why). Measured: seeds 1-300 agree to
6.7e-13 (forward over reverse) and 9.9e-13 (reverse over reverse); seeds 1-3000 to 2.4e-10
and 3.0e-11, both at seed 2653 (a saturated tanh, 1 - tanh² ~ 1e-7). A planted bug, tanh's
vjp_graph giving dy ⊙ (1 + y²), fails 69 of the 300 seeds on H·v alone (tg_backward, and so
the gradient lines, does not use vjp_graph).

Not reached from here: the generic broadcast loop (3-D/4-D, outer products), which test-ops
covers with finite differences, and the tensor-algebra ops at ranks 1-4, which
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
# H·v, element by element: |ours - torch| <= HVP_TOL * max(max |torch| of that leaf, tiny).
# Each side evaluates the second derivative in a few thousand float64 ops in its own order;
# their round-off is ~1e-13 of the product (measured <= 1e-12), three to four orders below
# 1e-9, while a wrong second derivative (a dropped product-rule term, a sign, σ' for σ'') is
# off by O(1).
# tiny = HVP_FLOOR * the largest |torch H·v| over all leaves: where a leaf's true H·v is 0 (a
# scalar gate added before softmax_xent, which a shift of every class leaves unchanged), both
# sides hold round-off, ~1e-15 of the largest product and O(1) apart relative to each other;
# against the floor that is ~1e-12. Where the bound is tightest (~1e-10 measured): a
# saturated tanh, whose 1 - y² (~1e-7) is formed from y = tanh z on both sides and so is good
# only to ε / (1 - y²); a normalization over equal values, whose variance is round-off next to ε.
HVP_TOL = 1e-9
HVP_FLOOR = 1e-3


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


def max_abs(ref):
    return max((abs(b) for b in ref if math.isfinite(b)), default=0.0)


def hvp_error(ours, ref, tiny):
    """(worst, first): the largest |ours - ref| / max(max |ref|, tiny) over the elements, and
    the index of the first element over HVP_TOL (None if none); NaN as scaled_error."""
    scale = max(max_abs(ref), tiny, sys.float_info.min)
    worst, first = 0.0, None
    for k, (a, b) in enumerate(zip(ours, ref)):
        err = 0.0 if a == b or (a != a and b != b) else abs(a - b) / scale
        if not err <= HVP_TOL:
            err = math.inf if err != err else err
            first = k if first is None else first
        worst = max(worst, err)
    return worst, first


def torch_hvp(loss, xs, vs):
    """H·v of the scalar loss w.r.t. the tensors xs jointly, v given per tensor: double
    backward, (H·v)_i = ∂/∂x_i Σ_j ⟨∂loss/∂x_j, v_j⟩ (what torch.autograd.functional.hvp
    does), zeros where the gradient does not depend on x_i. Keeps the graph for a later
    backward."""
    g = torch.autograd.grad(loss, xs, create_graph=True, retain_graph=True, allow_unused=True)
    s = sum((gi * vi).sum() for gi, vi in zip(g, vs) if gi is not None and gi.requires_grad)
    if not torch.is_tensor(s) or not s.requires_grad:  # the gradient is constant: H = 0
        return [torch.zeros_like(x) for x in xs]
    h = torch.autograd.grad(s, xs, retain_graph=True, allow_unused=True)
    # some double-backward formulas give torch's storage-less zero tensors: adding them to
    # zeros makes ordinary ones
    return [torch.zeros_like(x) if hi is None else torch.zeros_like(x) + hi
            for x, hi in zip(xs, h)]


def check_hvp(where, loss, leaves, traced, worst):
    """Compares the traced H·v of both modes (traced: "dir", "hvp_for", "hvp_ror", each
    leaf id -> values) with torch's on the replayed loss, w.r.t. the leaves (id -> tensor)
    jointly; raises worst[mode] to the largest relative error seen. Returns the mismatches.
    Shared with torch_ref_ops.py."""
    ids = list(leaves)
    missing = [i for i in ids if len(traced["dir"].get(i, ())) != leaves[i].numel()]
    if missing:
        return [f"{where}: leaf {missing[0]}: direction missing or wrong size"]
    vs = [torch.tensor(traced["dir"][i]).reshape(leaves[i].shape) for i in ids]
    try:
        ref = [r.detach().reshape(-1).tolist() for r in
               torch_hvp(loss, [leaves[i] for i in ids], vs)]
    except RuntimeError as e:  # a double backward torch lacks: no reference to compare with
        return [f"{where}: torch's H·v failed: {e}"]
    tiny = HVP_FLOOR * max((max_abs(r) for r in ref), default=0.0)
    errors = []
    for mode in ("hvp_for", "hvp_ror"):
        for i, r in zip(ids, ref):
            ours = traced[mode].get(i)
            if ours is None or len(ours) != len(r):
                errors.append(f"{where}: {mode} of leaf {i}: missing or wrong size")
                continue
            err, k = hvp_error(ours, r, tiny)
            worst[mode] = max(worst.get(mode, 0.0), err)
            if k is not None:
                errors.append(f"{where}: {mode} of leaf {i} {tuple(leaves[i].shape)} element "
                              f"{k}: ours {ours[k]!r} vs torch {r[k]!r} (relative error "
                              f"{err:.2e})")
    return errors


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
    hvp = {"dir": {}, "hvp_for": {}, "hvp_ror": {}}
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
        elif kind in hvp:
            hvp[kind][int(f[1])] = [float(x) for x in f[2:]]
    return t, leaves, loss_id, loss_value, grads, hvp


def check(refdump, seed, verbose, worst_hvp):
    out = subprocess.run([refdump, str(seed)], capture_output=True, text=True)
    if out.returncode != 0:
        return [f"seed {seed}: refdump failed ({out.returncode}): {out.stderr.strip()}"]
    t, leaves, loss_id, loss_value, grads, hvp = replay(out.stdout)
    loss = t[loss_id].reshape(())
    errors = check_hvp(f"seed {seed}", loss, leaves, hvp, worst_hvp)
    loss.backward()
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
    worst_hvp = {}
    for seed in range(args.first, args.first + args.seeds):
        failures += check(args.refdump, seed, args.verbose, worst_hvp)
    for f in failures[:20]:
        print(f)
    print(f"{args.seeds} random networks against PyTorch {torch.__version__} (float64): "
          f"{len(failures)} mismatches; H·v's largest relative error: forward over reverse "
          f"{worst_hvp.get('hvp_for', 0):.1e}, reverse over reverse "
          f"{worst_hvp.get('hvp_ror', 0):.1e}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
