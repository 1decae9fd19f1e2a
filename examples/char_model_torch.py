#!/usr/bin/python3
"""The character-level word model in PyTorch, side by side with tapegrad's examples/char-model.

The same data, model and settings (see examples/char-model.c):

    words of /usr/share/dict/words made only of a-z, each once; a word is held out when
    FNV-1a(seed as 8 little-endian bytes, then the word) mod 10 == 0
    inputs ". w1 ... wL", targets "w1 ... wL ." (class 0 is "."), batches of one length
    nn.Embedding(27, 32) -> nn.LSTM(32, 128) (or nn.GRU) -> nn.Linear(128, 27)
    F.cross_entropy (mean over every step of the batch), Adam lr 2e-3, float32

PyTorch's default initialization for the embedding and the LSTM/GRU (as tapegrad's layers);
the read-out is Xavier-uniform with a zero bias, as tapegrad's tg_dense for an identity
activation. The held-out loss is the mean cross-entropy per predicted character.

With --c-binary it first runs the C example with the same flags, then trains here, and prints
both held-out losses and training times:

    /usr/bin/python3 examples/char_model_torch.py --c-binary build/examples/char-model \\
        --epochs 5 --threads 1

(run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, so that PyTorch runs at full speed).
Needs torch (Debian: python3-torch) and wamerican.
"""
import argparse
import re
import subprocess
import sys
import time

MAX_LEN = 24
VOCAB = 27


def split_hash(seed, word):
    h = 0xcbf29ce484222325
    for b in list(seed.to_bytes(8, "little")) + list(word.encode()):
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def load_words(args):
    train, held, prev, seen = [], [], None, 0
    with open(args.words, encoding="utf-8", errors="replace") as f:
        for line in f:
            if args.limit and seen >= args.limit:
                break
            seen += 1
            w = line.rstrip("\r\n")
            if not (0 < len(w) <= MAX_LEN and re.fullmatch("[a-z]+", w)) or w == prev:
                continue
            prev = w
            (held if split_hash(args.seed, w) % 10 == 0 else train).append(w)
    return train, held


def batches(words, size, rng):
    """Words grouped by length, shuffled within each length and in batch order when rng."""
    import numpy as np

    by_len = {}
    for w in sorted(words, key=lambda w: (len(w), w)):
        by_len.setdefault(len(w), []).append(w)
    out = []
    for length in sorted(by_len):
        ws = by_len[length]
        if rng is not None:
            ws = [ws[i] for i in rng.permutation(len(ws))]
        out += [ws[i:i + size] for i in range(0, len(ws), size)]
    if rng is not None:
        out = [out[i] for i in rng.permutation(len(out))]
    return out


def encode(batch):
    import torch

    length = len(batch[0])
    idx = torch.zeros(length + 1, len(batch), dtype=torch.long)
    tgt = torch.zeros(length + 1, len(batch), dtype=torch.long)
    for k, w in enumerate(batch):
        codes = [ord(c) - ord("a") + 1 for c in w]
        idx[1:, k] = torch.tensor(codes)
        tgt[:-1, k] = torch.tensor(codes)
    return idx, tgt


def run_c(args):
    cmd = [args.c_binary, "--epochs", str(args.epochs), "--batch", str(args.batch),
           "--hidden", str(args.hidden), "--embed", str(args.embed), "--lr", str(args.lr),
           "--cell", args.cell, "--seed", str(args.seed), "--threads", str(args.threads),
           "--words", args.words, "--quiet"]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    print("running:", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    sys.stdout.write(out)
    losses = [float(x) for x in re.findall(r"held-out loss ([0-9.]+)", out)]
    secs = float(re.search(r"training time ([0-9.]+) s", out).group(1))
    return losses, secs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--words", default="/usr/share/dict/words")
    p.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--embed", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--c-binary", help="run tapegrad's example first, with the same flags")
    args = p.parse_args()

    c = run_c(args) if args.c_binary else None

    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, held = load_words(args)
    print(f"torch {torch.__version__}: {len(train)} training words, {len(held)} held out; "
          f"{args.cell.upper()} {args.hidden}, embedding {args.embed}, batch {args.batch}, "
          f"Adam lr {args.lr}, {torch.get_num_threads()} thread(s)", flush=True)

    embed = torch.nn.Embedding(VOCAB, args.embed)
    rnn = (torch.nn.GRU if args.cell == "gru" else torch.nn.LSTM)(args.embed, args.hidden)
    out = torch.nn.Linear(args.hidden, VOCAB)
    torch.nn.init.xavier_uniform_(out.weight)
    torch.nn.init.zeros_(out.bias)
    params = list(embed.parameters()) + list(rnn.parameters()) + list(out.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)

    def logits_of(idx):
        h, _ = rnn(embed(idx))
        return out(h.reshape(-1, args.hidden))

    held_batches = batches(held, args.batch, None)
    train_time = 0.0
    last = None
    for epoch in range(1, args.epochs + 1):
        rng = np.random.default_rng(args.seed * 1000003 + epoch)
        tb = batches(train, args.batch, rng)
        t0 = time.perf_counter()
        loss_sum, chars = 0.0, 0
        for batch in tb:
            idx, tgt = encode(batch)
            opt.zero_grad()
            loss = F.cross_entropy(logits_of(idx), tgt.reshape(-1))
            loss.backward()
            opt.step()
            loss_sum += loss.item() * tgt.numel()
            chars += tgt.numel()
        secs = time.perf_counter() - t0
        train_time += secs
        with torch.no_grad():
            s, n = 0.0, 0
            for batch in held_batches:
                idx, tgt = encode(batch)
                s += F.cross_entropy(logits_of(idx), tgt.reshape(-1), reduction="sum").item()
                n += tgt.numel()
        last = s / n
        print(f"epoch {epoch}  train loss {loss_sum / chars:.4f}  held-out loss {last:.4f}  "
              f"({secs:.1f} s, {len(train) / secs:.0f} words/s)", flush=True)
    print(f"training time {train_time:.1f} s")
    if args.samples:
        words = []
        with torch.no_grad():
            for _ in range(args.samples):
                idx, w = [0], ""
                while len(w) < MAX_LEN:
                    probs = F.softmax(logits_of(torch.tensor(idx).reshape(-1, 1))[-1], 0)
                    code = int(torch.multinomial(probs, 1))
                    if code == 0:
                        break
                    w += chr(ord("a") + code - 1)
                    idx.append(code)
                words.append(w)
        print("samples:", " ".join(words))
    if c is not None:
        c_losses, c_secs = c
        diff = (c_losses[-1] - last) / last
        print(f"\nheld-out loss after {args.epochs} epochs: tapegrad {c_losses[-1]:.4f}, "
              f"PyTorch {last:.4f} ({100 * diff:+.2f} %, bar: within 2 %)")
        print(f"training time: tapegrad {c_secs:.1f} s, PyTorch {train_time:.1f} s "
              f"({train_time / c_secs:.2f}x)")


if __name__ == "__main__":
    main()
