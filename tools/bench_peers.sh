#!/bin/sh
# tapegrad's training step beside the C peers kann and ggml; the work is in bench_peers.py
# (options: tools/bench_peers.sh --help). A shell name so the docs can call it as a tool.
exec /usr/bin/python3 "$(dirname "$0")/bench_peers.py" "$@"
