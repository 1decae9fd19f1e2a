#!/usr/bin/python3
"""Two builds of tg-bench side by side: a change's before/after pair, in one run.

    /usr/bin/python3 tools/bench_ab.py --before OLD/tools/tg-bench --after NEW/tools/tg-bench
        [--nets B-small,B-seed,B-seed4,B-mnist,B-chain] [--dtypes f32,f64] [--threads 1,2]
        [--rounds 3] [--reps 7] [--min-time 0.2] [--markdown]

Make OLD with `git worktree add /tmp/old COMMIT` and a build there with the same options (each
tg-bench finds its own libtapegrad through its rpath). Each round runs both builds over every
configuration, the order alternating (before first, then after first, ...): the speed of a
shared machine drifts over minutes, and a slow spell should not land on one side only.

Prints one table: per network, dtype and thread count the median over the rounds of each
build's median step (min-max over the rounds), before/after as the median of the per-round
ratios (> 1: the change is faster) with the rounds it won; and, for the 1-thread/2-thread
pair of each build, the 2-thread speedup (1-thread step over 2-thread step, median of the
rounds: both come from the same tg-bench invocation, seconds apart).
"""
import argparse
import statistics
import subprocess
import sys

from bench_torch import parse, print_table


def run(tg, a):
    cmd = [tg, "--nets", a.nets, "--dtypes", a.dtypes, "--threads", a.threads,
           "--reps", str(a.reps), "--min-time", str(a.min_time)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bench_ab: {' '.join(cmd)} failed:\n{p.stderr}")
    rows = {}
    for line in p.stdout.splitlines():
        if line.startswith("net="):
            kv = parse(line)
            rows[(kv["net"], kv["dtype"], int(kv["threads"]))] = float(kv["median_us"])
    return rows


def fmt(us):
    return f"{us:.2f}" if us < 100 else f"{us:.0f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="the old build's tg-bench")
    ap.add_argument("--after", required=True, help="the new build's tg-bench")
    ap.add_argument("--nets", default="B-small,B-seed,B-seed4,B-mnist,B-chain")
    ap.add_argument("--dtypes", default="f32,f64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()

    rounds = []  # per round: {"before": rows, "after": rows}
    for r in range(max(1, a.rounds)):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        got = {side: run(a.before if side == "before" else a.after, a) for side in order}
        rounds.append(got)
        print(f"# round {r + 1} of {a.rounds} done ({' then '.join(order)})", file=sys.stderr,
              flush=True)

    keys = sorted(rounds[0]["before"], key=lambda k: (a.nets.split(",").index(k[0]), k[1], k[2]))
    hdr = ["network", "dtype", "thr", "before µs (min-max)", "after µs (min-max)",
           "before/after (won)", "2-thread speedup before", "after"]
    rows = []
    for k in keys:
        b = [rd["before"][k] for rd in rounds]
        n = [rd["after"][k] for rd in rounds]
        ratios = [x / y for x, y in zip(b, n)]
        won = sum(x > y for x, y in zip(b, n))
        speed = ["", ""]
        one = (k[0], k[1], 1)
        if k[2] == 2 and all(one in rd["before"] for rd in rounds):
            for i, side in enumerate(("before", "after")):
                speed[i] = f"{statistics.median(rd[side][one] / rd[side][k] for rd in rounds):.2f}x"
        rows.append([k[0], k[1], str(k[2]),
                     f"{fmt(statistics.median(b))} ({fmt(min(b))}-{fmt(max(b))})",
                     f"{fmt(statistics.median(n))} ({fmt(min(n))}-{fmt(max(n))})",
                     f"{statistics.median(ratios):.2f}x ({won}/{len(rounds)})", *speed])
    print_table(hdr, rows, a.markdown)
    print(f"# {a.rounds} round(s), order alternating; before {a.before}, after {a.after}")


if __name__ == "__main__":
    main()
