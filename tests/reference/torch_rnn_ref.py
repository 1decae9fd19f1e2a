#!/usr/bin/python3
"""tapegrad's LSTM and GRU layers against torch.nn.LSTM and torch.nn.GRU, float64.

    torch_rnn_ref.py RNN_DUMP

Runs RNN_DUMP (tests/reference/rnn_dump.c: 2 layers, bidirectional, biases, h0 and c0 given,
T 5, B 3, I 4, H 6, seeded weights; forward and backward of J = sum(output * R_out) +
sum(h_n * R_h) (+ sum(c_n * R_c)) in tapegrad), loads the same weights by name into torch's
modules (tapegrad's "lstm/weight_ih_l0" is torch's state_dict key "weight_ih_l0"), replays J
and compares the output, h_n, c_n and the gradient of the input, h0, c0 and every weight.
Also checks that the batch_first run gave the same output and h_n. Exit 77 (meson's
"skipped") when torch is not installed.

Tolerance: an array passes when max |ours - torch| <= 1e-9 * max(1, max |torch|): both sides
evaluate the same float64 formulas in another order (GEMM blocking, the bias added in another
place), a few ulp apart, while a wrong rule (two gates swapped, a missing factor) is off by
O(1). Measured: every array agrees to <= 8.9e-16 (absolute, all scales <= 3.3). Planted
bugs fail: the LSTM's da_i computed with f in place of i (19 arrays mismatch), the GRU's dẑ
with r in place of z (18).
"""
import json
import subprocess
import sys

try:
    import torch
except ImportError:
    print("skipped: python3-torch not installed: run tools/install-deps.sh --all")
    sys.exit(77)

torch.set_default_dtype(torch.float64)
TOL = 1e-9


def tensor(d):
    return torch.tensor(d["data"], dtype=torch.float64).reshape(d["shape"])


def check(what, ours, ref, failures):
    ref = ref.detach()
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    err = (ours - ref).abs().max().item() if ref.numel() else 0.0
    ok = tuple(ours.shape) == tuple(ref.shape) and err <= TOL * scale
    print(f"  {what:36s} max |tapegrad - torch| = {err:.3g} (scale {scale:.3g})  "
          f"{'ok' if ok else 'MISMATCH'}")
    if not ok:
        failures.append(what)


def compare(dump, tag, failures):
    g = lambda k: tensor(dump[f"{tag}/{k}"])
    lstm = tag == "lstm"
    x, h0 = g("x"), g("h0")
    I, H = x.shape[2], h0.shape[2]
    cls = torch.nn.LSTM if lstm else torch.nn.GRU
    m = cls(I, H, num_layers=2, bidirectional=True, bias=True).double()
    prefix = f"{tag}/param/{tag}/"
    state = {k[len(prefix):]: tensor(v) for k, v in dump.items() if k.startswith(prefix)}
    if set(state) != set(m.state_dict()):
        print(f"  {tag}: parameter names differ: tapegrad {sorted(state)}, torch "
              f"{sorted(m.state_dict())}")
        failures.append(f"{tag} names")
        return
    m.load_state_dict(state)
    x.requires_grad_(True)
    h0.requires_grad_(True)
    if lstm:
        c0 = g("c0").requires_grad_(True)
        y, (hn, cn) = m(x, (h0, c0))
    else:
        y, hn = m(x, h0)
    loss = (y * g("R_out")).sum() + (hn * g("R_h")).sum()
    if lstm:
        loss = loss + (cn * g("R_c")).sum()
    loss.backward()
    print(f"{tag}:")
    check("output", g("output"), y, failures)
    check("h_n", g("h_n"), hn, failures)
    if lstm:
        check("c_n", g("c_n"), cn, failures)
    check("output (batch_first run)", g("output_batch_first"), y, failures)
    check("h_n (batch_first run)", g("h_n_batch_first"), hn, failures)
    check("d input", g("grad/x"), x.grad, failures)
    check("d h0", g("grad/h0"), h0.grad, failures)
    if lstm:
        check("d c0", g("grad/c0"), c0.grad, failures)
    for name, p in m.named_parameters():
        check(f"d {name}", g(f"grad/{tag}/{name}"), p.grad, failures)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    run = subprocess.run([sys.argv[1]], capture_output=True, text=True)
    if run.returncode != 0:
        print(f"rnn_dump failed ({run.returncode}): {run.stderr}")
        return 1
    dump = json.loads(run.stdout)
    failures = []
    for tag in ("lstm", "gru"):
        compare(dump, tag, failures)
    if failures:
        print(f"FAILED: {', '.join(failures)}")
        return 1
    print("all outputs and gradients agree with torch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
