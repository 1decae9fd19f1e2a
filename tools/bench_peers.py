#!/usr/bin/python3
"""tapegrad's training step beside the C peers kann and ggml (run it as tools/bench_peers.sh).

    tools/bench_peers.sh [--kann-src DIR] [--ggml-src DIR] [--peers-bin DIR] [--rebuild]
        [--tg build-perf/tools/tg-bench] [--nets B-mnist,B-small] [--threads 1,2]
        [--rounds 3] [--reps 7] [--min-time 0.2] [--warmup 50] [--steps 200] [--repeats 7]
        [--markdown]

Times one SGD training step (forward, backward, update) of tg-bench's B-mnist (784-512-256-10,
ReLU, softmax cross-entropy, batch 128) and B-small (2-16-16-1, tanh, MSE, batch 32), f32, in
tapegrad (tools/tg-bench), ggml 0.21.0 and kann r557 (the drivers in tools/peers/, both on
OpenBLAS).

The drivers are built by tools/peers/build.sh into --peers-bin (default build-peers/ in the
repository) unless kann_step_blas and ggml_step_blas are already there (--rebuild forces it).
The peers' sources come from --kann-src and --ggml-src; without them the pinned versions are
cloned from GitHub into PEERS_BIN/src, and if that fails the script stops and names the flags.

For each network and thread count the three engines run `--rounds` times, the order
alternating (tapegrad, ggml, kann; then kann, ggml, tapegrad; ...): the speed of a shared
machine drifts by 10-30 % over minutes, and a slow spell should not land on one side only.
tg-bench runs in this environment, unchanged (--reps, --min-time). The peers run with
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed, so OpenBLAS picks its best kernels for this CPU;
ggml with `--opt sgd --threads N` (its CPU and BLAS backends on N threads) and
OMP_WAIT_POLICY=PASSIVE on more than one thread, so that its OpenMP workers do not spin against
OpenBLAS's; kann with `--opt sgd --lr 0.01 --threads N` (kann_mt splits the batch over N
threads) and OPENBLAS_NUM_THREADS=1, so that those N threads do not each start a BLAS pool.
Each peer gives its `per-step us median` (--warmup, then --steps x --repeats steps, each timed).

Prints one table: per engine the median over the rounds (min-max over the rounds), and
ggml/ours and kann/ours as the median of the per-round ratios (> 1: ours is faster) with the
rounds ours was faster (k/n), as tools/bench_torch.py does for PyTorch.
"""
import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
from bench_torch import parse, print_table  # noqa: E402  (stdlib only at its top level)

ME = "bench_peers.sh"
# the pinned peers: kann has no tag for r557, so its commit
PEERS = {
    "kann": {"url": "https://github.com/attractivechaos/kann",
             "rev": "e260712e414e1fae5f57a2da6178b7a8af6bf0af",
             "name": "r557", "at": "r557 (commit e260712)", "flag": "--kann-src",
             "probe": "kann.h"},
    "ggml": {"url": "https://github.com/ggml-org/ggml", "rev": "v0.21.0",
             "name": "0.21.0", "at": "tag v0.21.0", "flag": "--ggml-src",
             "probe": os.path.join("include", "ggml.h")},
}
# tg-bench's networks (tools/tg-bench.c) and the drivers' --config for the same
NETS = {"B-mnist": ("mnist", (784, 512, 256, 10)), "B-small": ("small", (2, 16, 16, 1))}
ORDER = ("tapegrad", "ggml", "kann")
PEER_LINE = re.compile(r"per-step us median ([0-9.]+) \[([0-9.]+) - ([0-9.]+)\] \((\d+) steps\)")


def die(msg):
    sys.exit(f"{ME}: {msg}")


def n_params(dims):
    return sum(dims[i] * dims[i + 1] + dims[i + 1] for i in range(3))


def find_tg(given):
    if given:
        return given
    for b in ("build-perf", "build", "build-rel"):
        p = os.path.join(ROOT, b, "tools", "tg-bench")
        if os.access(p, os.X_OK):
            return p
    die("tg-bench not found in build-perf/, build/ or build-rel/; pass --tg PATH")


def source_version(eng, src):
    """The version a checkout declares (kann.h's KANN_VERSION, ggml's CMakeLists.txt)."""
    try:
        if eng == "kann":
            with open(os.path.join(src, "kann.h")) as f:
                m = re.search(r'#define KANN_VERSION "([^"]+)"', f.read())
            return m.group(1) if m else "?"
        with open(os.path.join(src, "CMakeLists.txt")) as f:
            text = f.read()
        parts = [re.search(rf"set\(GGML_VERSION_{p} (\d+)\)", text)
                 for p in ("MAJOR", "MINOR", "PATCH")]
        return ".".join(m.group(1) for m in parts) if all(parts) else "?"
    except OSError:
        return "?"


def clone(eng, dest):
    """A checkout of the pinned version in dest (cloned once, then reused)."""
    p = PEERS[eng]
    if os.path.exists(os.path.join(dest, p["probe"])):
        return dest
    shutil.rmtree(dest, ignore_errors=True)  # a clone cut short last time
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")  # fail rather than wait for a password
    if eng == "ggml":
        cmds = [["git", "clone", "-q", "--depth", "1", "--branch", p["rev"], p["url"], dest]]
    else:
        cmds = [["git", "clone", "-q", p["url"], dest],
                ["git", "-C", dest, "checkout", "-q", p["rev"]]]
    print(f"# cloning {eng} {p['name']} from {p['url']} into {dest}", file=sys.stderr, flush=True)
    for cmd in cmds:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode:
            shutil.rmtree(dest, ignore_errors=True)
            why = r.stderr.strip() or f"exit {r.returncode}"
            die(f"could not get {eng} {p['name']} ({' '.join(cmd)}: {why});\n"
                f"  pass {p['flag']} DIR, a checkout of {p['url']} at {p['at']},\n"
                f"  or --peers-bin DIR where kann_step_blas and ggml_step_blas are built")
    return dest


def peer_binaries(a):
    out = os.path.abspath(a.peers_bin or os.path.join(ROOT, "build-peers"))
    bins = {e: os.path.join(out, f"{e}_step_blas") for e in ("kann", "ggml")}
    stamp = os.path.join(out, "peers-versions.txt")
    if not a.rebuild and all(os.access(b, os.X_OK) for b in bins.values()):
        for e, b in bins.items():
            drv = os.path.join(TOOLS, "peers", f"{e}_step.c")
            if os.path.exists(drv) and os.path.getmtime(drv) > os.path.getmtime(b):
                print(f"# warning: {drv} is newer than {b}; pass --rebuild to rebuild it",
                      file=sys.stderr)
    else:
        srcs = {}
        for e in ("kann", "ggml"):
            given = a.kann_src if e == "kann" else a.ggml_src
            if given and not os.path.exists(os.path.join(given, PEERS[e]["probe"])):
                die(f"{PEERS[e]['flag']} {given}: no {PEERS[e]['probe']} there")
            srcs[e] = os.path.abspath(given) if given else clone(e, os.path.join(out, "src", e))
            v = source_version(e, srcs[e])
            if v != PEERS[e]["name"]:
                print(f"# warning: {srcs[e]} is {e} {v}, not the pinned {PEERS[e]['name']}",
                      file=sys.stderr)
        print(f"# building the peer drivers into {out}", file=sys.stderr, flush=True)
        r = subprocess.run(["sh", os.path.join(TOOLS, "peers", "build.sh"),
                            srcs["kann"], srcs["ggml"], out])
        if r.returncode:
            die("tools/peers/build.sh failed (it needs gcc, cmake and libopenblas-dev)")
        with open(stamp, "w") as f:  # for the table's footnote, when the binaries are reused
            for e in ("kann", "ggml"):
                rev = subprocess.run(["git", "-C", srcs[e], "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip()
                f.write(f"{e} {source_version(e, srcs[e])}" + (f" ({rev})" if rev else "") + "\n")
    try:
        with open(stamp) as f:
            versions = ", ".join(line.strip() for line in f if line.strip())
    except OSError:
        versions = "versions unknown (prebuilt binaries)"
    return bins, versions


def run(cmd, env=None):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        die(f"{' '.join(cmd)} exited with {r.returncode}:\n{r.stdout}{r.stderr}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser(prog=ME, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kann-src", metavar="DIR", help="a kann checkout (r557) to build against")
    ap.add_argument("--ggml-src", metavar="DIR", help="a ggml checkout (0.21.0) to build against")
    ap.add_argument("--peers-bin", metavar="DIR",
                    help="where the drivers are built (default build-peers/)")
    ap.add_argument("--rebuild", action="store_true", help="build the drivers even if present")
    ap.add_argument("--tg", metavar="PATH",
                    help="tg-bench (default: that of build-perf/, build/ or build-rel/)")
    ap.add_argument("--nets", default="B-mnist,B-small")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=7, help="tg-bench --reps")
    ap.add_argument("--min-time", type=float, default=0.2, help="tg-bench --min-time")
    ap.add_argument("--warmup", type=int, default=50, help="peer drivers' untimed steps")
    ap.add_argument("--steps", type=int, default=200, help="peer drivers' steps per sample")
    ap.add_argument("--repeats", type=int, default=7, help="peer drivers' samples")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()

    nets = a.nets.split(",")
    bad = [n for n in nets if n not in NETS]
    if bad:
        die(f"--nets: {','.join(bad)} not among {','.join(NETS)} (the networks the drivers have)")
    threads = a.threads.split(",")
    if not all(t.isdigit() and int(t) > 0 for t in threads):
        die(f"--threads {a.threads}: positive integers, comma-separated")
    rounds = max(1, a.rounds)
    tg = find_tg(a.tg)
    bins, versions = peer_binaries(a)

    peer_env = {k: v for k, v in os.environ.items()
                if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    steps = ["--warmup", str(a.warmup), "--steps", str(a.steps), "--repeats", str(a.repeats)]
    blas = {}

    def run_tapegrad(net, th):
        out = run([tg, "--nets", net, "--dtypes", "f32", "--threads", th, "--reps", str(a.reps),
                   "--min-time", str(a.min_time)])
        line = next((parse(ln) for ln in out.splitlines() if ln.startswith("net=")), None)
        if line is None:
            die(f"no net= line from {tg}:\n{out}")
        blas["tapegrad"] = f"kernel {line.get('kernel', '?')}"
        return float(line["median_us"])

    def run_peer(eng, net, th):
        config, dims = NETS[net]
        if eng == "ggml":
            env = dict(peer_env, **({"OMP_WAIT_POLICY": "PASSIVE"} if int(th) > 1 else {}))
            cmd = [bins["ggml"], "--config", config, "--threads", th, "--opt", "sgd"]
        else:
            env = dict(peer_env, OPENBLAS_NUM_THREADS="1")
            cmd = [bins["kann"], "--config", config, "--opt", "sgd", "--lr", "0.01",
                   "--threads", th]
        out = run(cmd + steps, env)
        m = PEER_LINE.search(out)
        if not m:
            die(f"no 'per-step us median' in the output of {' '.join(cmd)}:\n{out}")
        # the driver's network has tg-bench's sizes (its own count of weights and biases)
        p = re.search(r"params=(\d+)", out)
        if not p or int(p.group(1)) != n_params(dims):
            die(f"{eng} {config}: params={p and p.group(1)}, tg-bench's {net} has {n_params(dims)}")
        loss = re.search(r"loss (\S+) -> (\S+)", out)
        if loss and not all(math.isfinite(float(v)) for v in loss.groups()):
            die(f"{eng} {config}: loss {loss.group(1)} -> {loss.group(2)}: not finite")
        b = re.search(r"blas=(.*?) (?:blas_threads|OPENBLAS_CORETYPE)=", out)
        if b:
            blas[eng] = b.group(1).replace("OpenBLAS ", "")
        return float(m.group(1))

    runners = {"tapegrad": run_tapegrad, "ggml": lambda n, t: run_peer("ggml", n, t),
               "kann": lambda n, t: run_peer("kann", n, t)}
    times, ratios = {}, {}
    for net in nets:
        for th in threads:
            key = (net, th)
            per = {e: [] for e in ORDER}
            for rnd in range(rounds):
                for eng in (ORDER if rnd % 2 == 0 else ORDER[::-1]):
                    per[eng].append(runners[eng](net, th))
            times[key] = per
            ratios[key] = {e: [p / o for p, o in zip(per[e], per["tapegrad"])]
                           for e in ("ggml", "kann")}
            print(f"# {net} {th} thread(s): per round " + "; ".join(
                f"{e}/ours " + " ".join(f"{r:.2f}" for r in ratios[key][e])
                for e in ("ggml", "kann")), file=sys.stderr, flush=True)

    def cell(v):
        return f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"

    def ratio(r):
        return f"{statistics.median(r):.2f}x ({sum(x > 1 for x in r)}/{len(r)})"

    hdr = ["network", "thr", "tapegrad µs (min-max)", "ggml µs (min-max)", "kann µs (min-max)",
           "ggml/ours (won)", "kann/ours (won)"]
    rows = [[k[0], k[1], cell(times[k]["tapegrad"]), cell(times[k]["ggml"]), cell(times[k]["kann"]),
             ratio(ratios[k]["ggml"]), ratio(ratios[k]["kann"])] for k in times]
    print_table(hdr, rows, a.markdown)
    notes = [
        "f32, one SGD step (forward, backward, update); medians over the rounds, (min-max) over "
        "the rounds; peer/ours: median of the per-round ratios (> 1: ours faster), (won): rounds "
        "ours was faster",
        "tapegrad: tg-bench's median_us (median of --reps runs, each the mean step over >= "
        "--min-time s); ggml, kann: the driver's per-step median (each step timed on its own)",
        "networks as tg-bench's: B-mnist 784-512-256-10 ReLU, softmax cross-entropy (mean over "
        "the batch), batch 128; B-small 2-16-16-1 tanh, MSE (mean), batch 32; SGD lr 0.1 ours, "
        "0.01 the peers' (the step time does not depend on it); fixed random batches and initial "
        "weights, each engine its own",
    ]
    if "B-small" in nets:
        notes.append("B-small in ggml differs: each tanh is composed of 4 nodes (scale, expm1, "
                     "scale_bias, div), as ggml 0.21.0 has no backward for its tanh; kann and "
                     "tapegrad have one tanh node")
    notes.append(f"OpenBLAS {blas.get('ggml', blas.get('kann', '?'))} for the peers "
                 "(OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset); kann: kann_mt over the threads, "
                 "OPENBLAS_NUM_THREADS=1; ggml: CPU and BLAS backends on the threads, "
                 "OMP_WAIT_POLICY=PASSIVE above 1")
    notes.append(f"{versions}; tapegrad {tg} ({blas.get('tapegrad', '?')}), its environment "
                 f"unchanged; {rounds} round(s) per row, order alternating (tapegrad, ggml, kann, "
                 "then reversed)")
    for n in notes:
        print(f"# {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
