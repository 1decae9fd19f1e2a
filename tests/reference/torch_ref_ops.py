#!/usr/bin/python3
"""tapegrad's tensor-algebra ops against PyTorch, float64: values, VJPs and the loss.

    torch_ref_ops.py REFOPS [--seeds N] [--first S] [-v]

For each seed, runs `REFOPS SEED` (tests/reference/refops.c: a random graph over every op of
the "Tensor algebra" section of tapegrad.h on shapes of rank 1-4, forward and backward in
float64, printed as a trace) and replays it with PyTorch's own functions (torch.amax/amin,
logsumexp, var(correction=), F.pad, index_select, gather, F.gelu(approximate="tanh"),
F.nll_loss, F.cross_entropy(weight=, label_smoothing=), torch.matmul for bmm,
F.conv_transpose2d(output_padding=, groups=, dilation=), ...), lets
torch.autograd compute the gradients, and compares, each against torch's:
  - every op's output value (computed by torch from torch's own inputs, so a wrong forward
    shows at the op that made it) and its shape (torch's 0-d results are tapegrad's (1) for
    reductions and (1x1) for losses);
  - the gradient of every op's output that tapegrad keeps, of every leaf, and the loss;
  - H·v, H the loss's Hessian w.r.t. all leaves jointly and v a seeded standard normal
    direction, from tg_hvp in both modes, against torch's double backward (check_hvp of
    torch_ref.py: relative error per leaf <= 1e-9, HVP_TOL there says why). Where the graph
    holds an op without a differentiable VJP (no tg_op.vjp_graph yet), tg_hvp fails naming
    it: that graph's H·v is not compared, a line names the op and the summary counts them;
    any other failure of tg_hvp is a mismatch.
A wrong gradient whose consumers all have right output gradients names them: one of their
VJPs is wrong (those lines come first; the rest may have inherited it). Every op of OPS must
have run at least once in the seed range, or the run fails (so coverage cannot silently
drop); -v prints the per-op counts. Exit 77 (meson's "skipped") when torch is not installed, or under
meson's valgrind setup (valgrind would check CPython, not tapegrad).

Tolerance, as torch_ref.py (scaled_error, shared): an element passes when |ours - torch| <=
1e-10 * (1 + max |torch| of that tensor). Both sides evaluate the same float64 formulas in a
different order and with different libm/vector code (tapegrad's exp/log/tanh at <= 1.5 ulp,
its 16-lane sums, GEMM blocking), so they agree to a few ulp of the tensor's largest element,
not of each element; 1e-10 leaves about 10^5 ulp of room for that, while a wrong rule (a
missing factor, sign, transpose, broadcast sum, a tie split unevenly, a gradient leaking
through detach) is off by far more. The generator keeps inputs where the functions are
well-conditioned (log/sqrt/fractional pow on x >= 0.05, denominators |x| >= 0.3), and feeds
the ops whose derivative jumps (abs, clamp, maximum/minimum, max/min) only bit-exact values,
so a tie is a tie on both sides (and elu with α ≠ 1 no value within 1e-6 of 0).

Measured (seeds 1-6000, 55280 ops, each kind >= 1069 times): 0 mismatches, the largest scaled
difference 3.7e-13. Planted bugs, each caught in the default 200 seeds (graphs that fail): max/min ties given the whole
gradient instead of 1/c (29), gather's VJP assigning instead of adding for repeated indices
(27), var's VJP ignoring the correction (18), cross_entropy's smoothing term without the
weight sum (30), where's broadcast VJP sending a's share to b too (18), where's same-shape
VJP with the mask inverted (19), gelu_tanh's derivative off by a factor 1 + 1e-7 (33), a
gradient through detach (41), bmm summing a broadcast B's gradient over the first batch only
(10), conv_transpose2d's dW reading group 0's rows of x for every group (12), batch_norm's
fused VJP skipping g' in dx (22 of 300), dropout's VJP scaled by 0.999 (20); the failing
line names the op whose VJP is wrong.

H·v measured: seeds 1-200 compare 182 graphs (all 55 op kinds), largest relative error
3.8e-12 forward over reverse, 3.4e-12 reverse over reverse; seeds 1-2000 (1801 graphs)
1.2e-10 and 2.7e-10, at seed 592: group_norm over a group of equal values, whose variance
(round-off) sits next to ε = 1e-5. The graphs not compared are those where tg_hvp fails
(each one a mismatch). Planted in the vjp_graph rules, each caught in the default 200 seeds:
softmax's dx = y ⊙ (dy + Σ dy ⊙ y) (70 graphs fail), tanh's dy ⊙ (1 + y²) (66).
"""
import os
import sys

if os.environ.get("TG_UNDER_VALGRIND"):
    print("under valgrind: it would check CPython and torch, not tapegrad: skipped")
    sys.exit(77)

import argparse
import math
import re
import subprocess
from collections import Counter

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("skipped: python3-torch not installed: run tools/install-deps.sh --all")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import REL_TOL, check_hvp, scaled_error  # noqa: E402  (one rule for both)

torch.set_default_dtype(torch.float64)
# padding="same" with an even kernel span pads one side more; torch warns that it copies
import warnings  # noqa: E402
warnings.filterwarnings("ignore", message="Using padding='same'")

# Every op the test must exercise: the "Tensor algebra" section of tapegrad.h.
OPS = [
    "neg", "exp", "log", "log1p", "sqrt", "square", "abs", "pow", "clamp", "silu", "elu",
    "gelu_tanh", "div", "maximum", "minimum", "where", "sum_axes", "mean_axes", "max_axes",
    "min_axes", "logsumexp", "var", "softmax", "log_softmax", "reshape", "permute", "expand",
    "slice", "concat", "stack", "pad", "index_select", "gather", "detach", "bmm", "conv2d",
    "conv1d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "global_avg_pool2d",
    "batch_norm", "group_norm", "layer_norm", "rms_norm", "dropout",
    "scaled_dot_product_attention", "lstm_cell", "gru_cell", "nll_loss",
    "bce_with_logits", "l1", "huber", "smooth_l1", "cross_entropy",
]
LOSSES = {"nll_loss", "bce_with_logits", "l1", "huber", "smooth_l1", "cross_entropy"}
GLUE = {"mul", "sum", "add"}  # the 2-D-era ops that sum the outputs into the loss

try:
    torch.var(torch.zeros(3), dim=(0,), correction=2)
    HAVE_CORRECTION = True
except TypeError:  # older torch: unbiased= only
    HAVE_CORRECTION = False


def ints(s):
    return [int(v) for v in s.split(",")] if s else []


def floats(s):
    return [float(v) for v in s.split(",")] if s else []


def axes_of(attr, x):
    return tuple(range(x.dim())) if attr["axes"] == "all" else tuple(ints(attr["axes"]))


def var(x, dims, correction, keep):
    if HAVE_CORRECTION:
        return torch.var(x, dim=dims, correction=correction, keepdim=keep)
    if correction in (0, 1):
        return torch.var(x, dim=dims, unbiased=correction == 1, keepdim=keep)
    n = 1
    for d in dims:
        n *= x.shape[d]
    return torch.var(x, dim=dims, unbiased=False, keepdim=keep) * (n / (n - correction))


def apply(name, a, ins):
    """Op `name` with attributes a (a dict of strings) on torch tensors ins."""
    x = ins[0]
    if name == "neg":
        return torch.neg(x)
    if name == "exp":
        return torch.exp(x)
    if name == "log":
        return torch.log(x)
    if name == "log1p":
        return torch.log1p(x)
    if name == "sqrt":
        return torch.sqrt(x)
    if name == "square":
        return torch.square(x)
    if name == "abs":
        return torch.abs(x)
    if name == "pow":
        return torch.pow(x, float(a["p"]))
    if name == "clamp":
        return torch.clamp(x, min=float(a["lo"]), max=float(a["hi"]))
    if name == "silu":
        return F.silu(x)
    if name == "elu":
        return F.elu(x, alpha=float(a["alpha"]))
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "div":
        return torch.div(ins[0], ins[1])
    if name == "maximum":
        return torch.maximum(ins[0], ins[1])
    if name == "minimum":
        return torch.minimum(ins[0], ins[1])
    if name == "where":
        return torch.where(ins[0] != 0, ins[1], ins[2])
    if name in ("sum_axes", "mean_axes", "max_axes", "min_axes", "logsumexp"):
        f = {"sum_axes": torch.sum, "mean_axes": torch.mean, "max_axes": torch.amax,
             "min_axes": torch.amin, "logsumexp": torch.logsumexp}[name]
        return f(x, dim=axes_of(a, x), keepdim=a["keep"] == "1")
    if name == "var":
        return var(x, axes_of(a, x), int(a["correction"]), a["keep"] == "1")
    if name == "softmax":
        return F.softmax(x, dim=int(a["axis"]))
    if name == "log_softmax":
        return F.log_softmax(x, dim=int(a["axis"]))
    if name == "reshape":
        return x.reshape(ints(a["dims"]))
    if name == "permute":
        return x.permute(ints(a["perm"]))
    if name == "expand":
        return x.expand(ints(a["dims"]))
    if name == "slice":
        steps = ints(a["step"]) if "step" in a else [1] * x.dim()
        stops = [None if s == "end" else int(s) for s in a["stop"].split(",")]
        return x[tuple(slice(b, e, s) for b, e, s in zip(ints(a["start"]), stops, steps))]
    if name == "concat":
        return torch.cat(ins, dim=int(a["axis"]))
    if name == "stack":
        return torch.stack(ins, dim=int(a["axis"]))
    if name == "pad":
        before, after = ints(a["before"]), ints(a["after"])
        pads = []
        for b, e in reversed(list(zip(before, after))):  # F.pad: last axis first
            pads += [b, e]
        return F.pad(x, pads, mode="constant", value=float(a["value"]))
    if name == "index_select":
        return torch.index_select(x, int(a["axis"]), torch.tensor(ints(a["index"])))
    if name == "gather":
        index = torch.tensor(ints(a["index"])).reshape(ints(a["ishape"]))
        return torch.gather(x, int(a["axis"]), index)
    if name == "detach":
        return x.detach()
    if name == "bmm":
        p, q = ins
        p = p.transpose(-1, -2) if a["ta"] == "1" else p
        q = q.transpose(-1, -2) if a["tb"] == "1" else q
        return torch.matmul(p, q)
    if name in ("conv2d", "conv1d"):
        conv = F.conv2d if name == "conv2d" else F.conv1d
        padding = "same" if a["same"] == "1" else tuple(ints(a["padding"]))
        b = ins[2] if len(ins) > 2 else None
        return conv(ins[0], ins[1], b, stride=tuple(ints(a["stride"])), padding=padding,
                    dilation=tuple(ints(a["dilation"])), groups=int(a["groups"]))
    if name == "conv_transpose2d":
        b = ins[2] if len(ins) > 2 else None
        return F.conv_transpose2d(ins[0], ins[1], b, stride=tuple(ints(a["stride"])),
                                  padding=tuple(ints(a["padding"])),
                                  output_padding=tuple(ints(a["output_padding"])),
                                  groups=int(a["groups"]), dilation=tuple(ints(a["dilation"])))
    if name == "max_pool2d":
        return F.max_pool2d(x, tuple(ints(a["kernel"])), stride=tuple(ints(a["stride"])),
                            padding=tuple(ints(a["padding"])))
    if name == "avg_pool2d":
        return F.avg_pool2d(x, tuple(ints(a["kernel"])), stride=tuple(ints(a["stride"])),
                            padding=tuple(ints(a["padding"])), count_include_pad=True)
    if name == "global_avg_pool2d":
        return F.adaptive_avg_pool2d(x, 1)
    if name == "batch_norm":
        rest = list(ins[1:])
        w = rest.pop(0) if a["gamma"] == "1" else None
        b = rest.pop(0) if a["beta"] == "1" else None
        if w is None and b is not None:  # torch 1.13's double backward fails on this pair
            w = torch.ones(ins[0].shape[1])
        rm, rv = (rest[0].clone(), rest[1].clone()) if a["stats"] == "1" else (None, None)
        y = F.batch_norm(ins[0], rm, rv, w, b, training=a["training"] == "1",
                         momentum=float(a["momentum"]), eps=float(a["eps"]))
        return {"identity": lambda v: v, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
                "relu": F.relu, "leaky_relu": lambda v: F.leaky_relu(v, 0.01),
                "softplus": F.softplus, "gelu": F.gelu}[a["act"]](y)
    if name == "dropout":  # F.dropout's definition with tapegrad's mask (see refops.c)
        mask = torch.tensor([float(m) for m in a["mask"].split(",")]).reshape(x.shape)
        p = float(a["p"])
        return x * mask / (1 - p)
    if name in ("lstm_cell", "gru_cell"):  # the formulas of nn.LSTMCell / nn.GRUCell
        xw, s, w = ins[0], ins[1], ins[2]
        rest = list(ins[3:])
        g, H = (4, w.shape[1]) if name == "lstm_cell" else (3, w.shape[1])
        bi = rest.pop(0) if a["bias_ih"] == "1" else torch.zeros(g * H)
        bh = rest.pop(0) if a["bias_hh"] == "1" else torch.zeros(g * H)
        h = s[:, :H]
        gi, gh = xw + bi, h @ w.T + bh
        if name == "lstm_cell":
            a_ = gi + gh
            i, f = torch.sigmoid(a_[:, :H]), torch.sigmoid(a_[:, H:2 * H])
            gg, o = torch.tanh(a_[:, 2 * H:3 * H]), torch.sigmoid(a_[:, 3 * H:])
            c = f * s[:, H:] + i * gg
            return torch.cat([o * torch.tanh(c), c], dim=1)
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        return (1 - z) * n + z * h
    if name == "group_norm":
        rest = list(ins[1:])
        w = rest.pop(0) if a["gamma"] == "1" else None
        b = rest.pop(0) if a["beta"] == "1" else None
        if w is None and b is not None:  # torch 1.13's backward fails on (no weight, a bias)
            w = torch.ones(ins[0].shape[1])
        return F.group_norm(ins[0], int(a["groups"]), w, b, eps=float(a["eps"]))
    if name == "scaled_dot_product_attention":  # torch 1.13 has no F.scaled_dot_product_attention
        q, k, v = ins[0], ins[1], ins[2]
        z = float(a["scale"]) * (q @ k.transpose(-1, -2))
        if a["mask"] == "1":
            z = z + ins[3]
        if a["causal"] == "1":
            t, s = z.shape[-2], z.shape[-1]
            z = z.masked_fill(torch.ones(t, s, dtype=torch.bool).triu(1), float("-inf"))
        return torch.softmax(z, dim=-1) @ v
    if name in ("layer_norm", "rms_norm"):
        n_norm, eps = int(a["n_norm"]), float(a["eps"])
        rest = list(ins[1:])
        w = rest.pop(0) if a["gamma"] == "1" else None
        b = rest.pop(0) if a["beta"] == "1" else None
        if name == "layer_norm":
            shape = tuple(x.shape[x.dim() - n_norm:])
            if w is None and b is not None:  # torch 1.13's double backward fails on this pair
                w = torch.ones(shape)
            return F.layer_norm(x, shape, w, b, eps=eps)
        # torch 1.13 has no F.rms_norm: its definition
        dims = tuple(range(x.dim() - n_norm, x.dim()))
        y = x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + eps)
        return y * w if w is not None else y
    if name in ("nll_loss", "cross_entropy"):
        s = x if a["class_axis"] == "1" else x.T  # (examples x classes)
        labels = torch.tensor(ints(a["labels"]), dtype=torch.long)
        w = torch.tensor(floats(a["weight"])) if "weight" in a else None
        if name == "nll_loss":
            return F.nll_loss(s, labels, weight=w)
        return F.cross_entropy(s, labels, weight=w, label_smoothing=float(a["smoothing"]))
    if name == "bce_with_logits":
        return F.binary_cross_entropy_with_logits(ins[0], ins[1])
    if name == "l1":
        return F.l1_loss(ins[0], ins[1])
    if name == "huber":
        return F.huber_loss(ins[0], ins[1], delta=float(a["delta"]))
    if name == "smooth_l1":
        return F.smooth_l1_loss(ins[0], ins[1], beta=float(a["beta"]))
    if name == "mul":
        return ins[0] * ins[1]
    if name == "sum":
        return ins[0].sum()
    if name == "add":
        return ins[0] + ins[1]
    raise ValueError("unknown op " + name)


class Trace:
    def __init__(self, text, retain_grad=True):
        """retain_grad: keep the gradient of every op's output (for the first-order
        comparison); off for H·v, as torch 1.13's double backward of batch_norm fails on an
        input with retain_grad() (undefined tensor)."""
        self.retain_grad = retain_grad
        self.t = {}  # id -> torch tensor
        self.kind = {}  # id -> "leaf" / "const" / op name
        self.desc = {}  # id -> text for messages
        self.ops = []  # (id, name, dims, attr, input ids)
        self.ours = {"val": {}, "ograd": {}, "grad": {}, "dir": {}, "hvp_for": {},
                     "hvp_ror": {}}
        self.hvp_error = None  # tg_hvp's message where it failed
        self.shape_errors = []
        self.loss_id = self.loss_value = None
        for line in text.splitlines():
            f = line.split()
            if not f:
                continue
            kind = f[0]
            if kind in ("leaf", "const"):
                i, ndim = int(f[1]), int(f[2])
                dims = [int(d) for d in f[3:3 + ndim]]
                assert f[3 + ndim] == ":", line
                v = torch.tensor([float(x) for x in f[4 + ndim:]]).reshape(dims)
                self.t[i] = v.requires_grad_(True) if kind == "leaf" else v
                self.kind[i] = kind
                self.desc[i] = f"{kind} {i} {tuple(dims)}"
            elif kind == "op":
                self.record(f)
            elif kind == "loss":
                self.loss_id, self.loss_value = int(f[1]), float(f[2])
            elif kind in self.ours:
                self.ours[kind][int(f[1])] = [float(x) for x in f[2:]]
            elif kind == "hvp_error":
                self.hvp_error = line.split(None, 1)[1] if len(f) > 1 else "(no message)"
            else:
                raise ValueError("bad trace line: " + line)

    def record(self, f):
        i, name, ndim = int(f[1]), f[2], int(f[3])
        dims = [int(d) for d in f[4:4 + ndim]]
        colon = f.index(":")
        attr = dict(tok.split("=", 1) for tok in f[4 + ndim:colon])
        ins = [int(x) for x in f[colon + 1:]]
        y = apply(name, attr, [self.t[k] for k in ins])
        if name in GLUE:
            y = y.reshape(dims)
        else:
            got = tuple(y.shape) if y.dim() else ((1, 1) if name in LOSSES else (1,))
            if got != tuple(dims):
                msg = f"op {i} {name} {attr}: shape {tuple(dims)}, torch {got}"
                if y.numel() != math.prod(dims):
                    raise ValueError(msg)
                self.shape_errors.append(msg)
            y = y.reshape(dims)
        if y.requires_grad and self.retain_grad:
            y.retain_grad()
        self.t[i] = y
        self.kind[i] = name
        shown = {k: (v if len(v) <= 60 else v[:57] + "...") for k, v in attr.items()}
        self.desc[i] = (f"op {i} {name} {tuple(dims)} {shown} of "
                        + ", ".join(f"{k}{tuple(self.t[k].shape)}" for k in ins))
        self.ops.append((i, name, dims, attr, ins))


def without_vjp_graph(message):
    """The op that tg_hvp's message names as having no differentiable VJP."""
    m = re.search(r"op (\S+) \(node #\d+\) has no differentiable VJP", message)
    return m.group(1) if m else None


def check(refops, seed, counts, verbose, hvp):
    out = subprocess.run([refops, str(seed)], capture_output=True, text=True)
    if out.returncode != 0:
        return [f"seed {seed}: refops failed ({out.returncode}): {out.stderr.strip()}"]
    try:
        tr = Trace(out.stdout)
    except Exception as e:  # a trace torch cannot replay: say which seed
        return [f"seed {seed}: replay failed: {type(e).__name__}: {e}"]
    for _, name, _, _, _ in tr.ops:
        if name not in GLUE:
            counts[name] += 1
    errors = [f"seed {seed}: {e}" for e in tr.shape_errors]
    loss = tr.t[tr.loss_id].reshape(())
    # H·v w.r.t. all leaves jointly, on a replay of its own (skipped, not failed, where an op
    # has no vjp_graph yet: tg_grad cannot record its VJP)
    if tr.hvp_error is None:
        again = Trace(out.stdout, retain_grad=False)
        leaves = {i: v for i, v in again.t.items() if again.kind[i] == "leaf"}
        errors += check_hvp(f"seed {seed}", again.t[again.loss_id].reshape(()), leaves,
                            again.ours, hvp["worst"])
        hvp["compared"] += 1
        hvp["ops"].update(name for _, name, _, _, _ in tr.ops if name not in GLUE)
    elif without_vjp_graph(tr.hvp_error):
        op = without_vjp_graph(tr.hvp_error)
        hvp["skipped"][op] += 1
        print(f"seed {seed}: H·v not compared: op {op} has no differentiable VJP")
    else:
        mode, _, message = tr.hvp_error.partition(" ")
        errors.append(f"seed {seed}: tg_hvp ({mode}) failed: {message}")
    loss.backward()
    worst = 0.0
    if not abs(tr.loss_value - loss.item()) <= REL_TOL * (1 + abs(loss.item())):
        errors.append(f"seed {seed}: loss {tr.loss_value!r} vs torch {loss.item()!r}")

    def compare(what, i, ours, ref):
        """None when ours matches ref, else the message."""
        nonlocal worst
        if ours is None or len(ours) != len(ref):
            return (f"seed {seed}: {what} of {tr.desc[i]}: missing or "
                    f"{len(ours or [])} elements, torch {len(ref)}")
        err, k = scaled_error(ours, ref)
        worst = max(worst, err)
        if k is None:
            return None
        return (f"seed {seed}: {what} of {tr.desc[i]}: element {k}: ours {ours[k]!r} "
                f"vs torch {ref[k]!r} (scaled error {err:.2e})")

    for i, *_ in tr.ops:
        e = compare("value", i, tr.ours["val"].get(i), tr.t[i].detach().reshape(-1).tolist())
        errors += [e] if e else []
    grad_err = {}
    for i, v in tr.t.items():
        kind = tr.kind[i]
        if kind == "const":
            continue
        if not v.requires_grad:  # detach's output: a gradient here would flow on
            ours = tr.ours["ograd"].get(i)
            if ours and any(g != 0 for g in ours):
                errors.append(f"seed {seed}: gradient of {tr.desc[i]}: torch has none (a "
                              f"constant), ours {ours[:4]!r}...")
            continue
        ref = (v.grad.reshape(-1).tolist() if v.grad is not None else [0.0] * v.numel())
        ours = tr.ours["grad" if kind == "leaf" else "ograd"].get(i)
        if kind != "leaf" and ours is None:
            continue  # a view or an output tapegrad keeps no gradient for
        grad_err[i] = compare("gradient", i, ours, ref)
    # A wrong gradient whose consumers (the ops it flows back from) all have right output
    # gradients was made wrong by one of their VJPs: those come first, the ones that may
    # only have inherited an error after them.
    first, inherited = [], []
    for i, e in grad_err.items():
        if not e:
            continue
        consumers = [f"op {j} {name}" for j, name, _, _, ins in tr.ops
                     if i in ins and tr.t[j].requires_grad]
        wrong = [j for j, _, _, _, ins in tr.ops if i in ins and grad_err.get(j)]
        if wrong:
            inherited.append(e + "; its consumers " + ", ".join(f"op {j}" for j in wrong)
                             + " have wrong gradients too")
        else:
            first.append(e + "; the VJP of " + " or ".join(consumers) + " is wrong")
    errors += first + inherited
    if verbose:
        names = " ".join(name for _, name, _, _, _ in tr.ops if name not in GLUE)
        print(f"seed {seed}: {names}; worst scaled error {worst:.2e}")
    return errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("refops")
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--first", type=int, default=1)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    counts = Counter()
    hvp = {"worst": {}, "compared": 0, "skipped": Counter(), "ops": Counter()}
    failures = []
    bad_seeds = 0
    for seed in range(args.first, args.first + args.seeds):
        errors = check(args.refops, seed, counts, args.verbose, hvp)
        failures += errors
        bad_seeds += bool(errors)
    for f in failures[:40]:
        print(f)
    if len(failures) > 40:
        print(f"... and {len(failures) - 40} more")
    if args.verbose:
        print("ops run: " + ", ".join(f"{name} {counts[name]}" for name in OPS))
    unknown = sorted(set(counts) - set(OPS))
    missing = [name for name in OPS if counts[name] == 0]
    if missing:
        print(f"never ran in seeds {args.first}..{args.first + args.seeds - 1}: "
              + " ".join(missing))
    if unknown:
        print("ops outside the list: " + " ".join(unknown))
    skipped = sum(hvp["skipped"].values())
    if args.verbose:
        print("ops in graphs whose H·v was compared: "
              + ", ".join(f"{name} {hvp['ops'][name]}" for name in OPS))
    print(f"H·v compared on {hvp['compared']} graphs ({len(hvp['ops'])} of {len(OPS)} op kinds), "
          f"largest relative error: forward over reverse {hvp['worst'].get('hvp_for', 0):.1e}, "
          f"reverse over reverse {hvp['worst'].get('hvp_ror', 0):.1e}; not on {skipped} graphs, "
          "where tg_hvp met an op without a differentiable VJP: "
          + (", ".join(f"{op} {n}" for op, n in sorted(hvp["skipped"].items())) or "none"))
    print(f"{args.seeds} random graphs, {sum(counts.values())} ops ({len(OPS) - len(missing)} "
          f"of {len(OPS)} kinds, each >= {min(counts[n] for n in OPS)} times) against PyTorch "
          f"{torch.__version__} (float64): {len(failures)} mismatches in {bad_seeds} graphs")
    return 1 if failures or missing or unknown else 0


if __name__ == "__main__":
    sys.exit(main())
