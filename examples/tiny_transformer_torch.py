#!/usr/bin/python3
"""A tiny transformer reversing 16-digit sequences in PyTorch, side by side with tapegrad's
examples/tiny-transformer.

The same model and settings:

    nn.Embedding(10, 64) + a learned position table nn.Parameter (16 x 64), both N(0, 1)
    2 x nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0, activation="gelu",
                                   batch_first=True, norm_first=True)
    nn.LayerNorm(64), nn.Linear(64, 10) at every position
    F.cross_entropy over all 16 positions (mean), Adam lr 3e-3 (optional linear warm-up, as
    tapegrad's schedule), batch 64, float32

No causal mask: each output position attends to the whole input. The data rule is the C
example's: digits uniform in 0..9, fresh sequences for every batch from a generator seeded by
--seed, target = the reversed sequence; the held-out set is 2000 sequences from a fixed seed
(the generators differ from tapegrad's tg_rng, so the sequences themselves differ). Every
--eval-every steps: step, mean training loss since the last line, held-out token and
exact-sequence accuracy; stops at --target (99 %) or after --steps; exit 0 when reached.

With --c-binary it first runs the C example with the same flags, then trains here, and prints
both results side by side:

    /usr/bin/python3 examples/tiny_transformer_torch.py --c-binary build/examples/tiny-transformer \\
        --threads 2 --seed 1

(run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, so that PyTorch runs at full speed).
Needs torch (Debian: python3-torch).
"""
import argparse
import re
import subprocess
import sys
import time

LEN, DIGITS, D_MODEL, HEADS, FF, BLOCKS = 16, 10, 64, 4, 256, 2
HELD_OUT, HELD_OUT_SEED, EVAL_ROWS = 2000, 20261207, 500


def run_c(args):
    cmd = [args.c_binary, "--steps", str(args.steps), "--seed", str(args.seed), "--threads",
           str(args.threads), "--lr", str(args.lr), "--warmup", str(args.warmup),
           "--eval-every", str(args.eval_every), "--batch", str(args.batch), "--target",
           str(args.target), "--quiet"]
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    sys.stdout.write(out.stdout)
    sys.stderr.write(out.stderr)
    m = re.search(r"final held-out sequence accuracy ([0-9.]+)% \(token ([0-9.]+)%\) after "
                  r"([0-9]+) steps; training ([0-9.]+) s", out.stdout)
    if not m:
        raise SystemExit("could not read the C example's final line")
    return float(m.group(1)), float(m.group(2)), int(m.group(3)), float(m.group(4)), wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--target", type=float, default=0.99)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--c-binary", help="run this tapegrad example first and compare")
    args = ap.parse_args()

    c_result = run_c(args) if args.c_binary else None

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(DIGITS, D_MODEL)
            self.pos = nn.Parameter(torch.randn(LEN, D_MODEL))
            self.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(D_MODEL, HEADS, FF, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
                for _ in range(BLOCKS))
            self.norm = nn.LayerNorm(D_MODEL)
            self.head = nn.Linear(D_MODEL, DIGITS)

        def forward(self, seq):
            h = self.tok(seq) + self.pos
            for b in self.blocks:
                h = b(h)
            return self.head(self.norm(h))

    def draw(gen, rows):
        seq = torch.randint(0, DIGITS, (rows, LEN), generator=gen)
        return seq, seq.flip(1)

    model = Model()
    held_seq, held_want = draw(torch.Generator().manual_seed(HELD_OUT_SEED), HELD_OUT)
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / args.warmup if s < args.warmup else 1.0)
    n_params = sum(p.numel() for p in model.parameters())
    if not args.quiet:
        print(f"tiny_transformer_torch: reverse {LEN} digits; {n_params} parameters, batch "
              f"{args.batch}, Adam lr {args.lr:g} (warm-up {args.warmup}), {args.threads} "
              f"thread{'' if args.threads == 1 else 's'}, held-out {HELD_OUT} sequences")

    def evaluate():
        tokens = whole = 0
        with torch.no_grad():
            for r0 in range(0, HELD_OUT, EVAL_ROWS):
                pred = model(held_seq[r0:r0 + EVAL_ROWS]).argmax(-1)
                right = (pred == held_want[r0:r0 + EVAL_ROWS]).sum(1)
                tokens += int(right.sum())
                whole += int((right == LEN).sum())
        return tokens / (HELD_OUT * LEN), whole / HELD_OUT

    t0 = time.time()
    eval_secs, loss_sum, in_sum, step = 0.0, 0.0, 0, 0
    first_loss = last_loss = float("nan")
    token_acc = seq_acc = 0.0
    reached = False
    while step < args.steps and not reached:
        seq, want = draw(gen, args.batch)
        loss = F.cross_entropy(model(seq).reshape(-1, DIGITS), want.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        l = loss.item()
        if step == 0:
            first_loss = l
        loss_sum += l
        in_sum += 1
        step += 1
        if step % args.eval_every == 0 or step == args.steps:
            e0 = time.time()
            token_acc, seq_acc = evaluate()
            eval_secs += time.time() - e0
            last_loss = loss_sum / in_sum
            reached = seq_acc >= args.target
            if not args.quiet:
                print(f"step {step:5d}  loss {last_loss:.4f}  held-out token "
                      f"{100 * token_acc:6.2f}%  sequence {100 * seq_acc:6.2f}%  "
                      f"({time.time() - t0:.1f} s)", flush=True)
            loss_sum, in_sum = 0.0, 0
    secs = time.time() - t0
    print(f"final held-out sequence accuracy {100 * seq_acc:.2f}% (token {100 * token_acc:.2f}%) "
          f"after {step} steps; training {secs:.1f} s ({eval_secs:.1f} s of it evaluating); "
          f"loss {first_loss:.4f} -> {last_loss:.4f}")
    if not reached:
        print(f"target {100 * args.target:.2f}% not reached")
    if c_result:
        c_seq, c_tok, c_steps, c_secs, c_wall = c_result
        print(f"\n{'':10s} {'sequence':>9s} {'token':>8s} {'steps':>6s} {'training s':>11s}")
        print(f"{'tapegrad':10s} {c_seq:8.2f}% {c_tok:7.2f}% {c_steps:6d} {c_secs:11.1f}")
        print(f"{'pytorch':10s} {100 * seq_acc:8.2f}% {100 * token_acc:7.2f}% {step:6d} "
              f"{secs:11.1f}")
        print(f"(threads {args.threads}; the C process's wall time, start-up included: "
              f"{c_wall:.1f} s)")
    return 0 if reached else 1


if __name__ == "__main__":
    sys.exit(main())
