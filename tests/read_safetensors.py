#!/usr/bin/env python3
"""Read a safetensors file with numpy only, following the published format:
8-byte little-endian header length N, N bytes of UTF-8 JSON, then the raw little-endian data.

    read_safetensors.py FILE            print names, dtypes, shapes, metadata and values
    read_safetensors.py --check HELPER  run HELPER OUT (tests/ckpt-write-sample.c) and check
                                        every name and value it wrote

Exit status 77 (meson's "skipped") when numpy is missing.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("numpy is not installed: skipped")
    sys.exit(77)

DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I8": "i1", "U8": "u1", "I16": "<i2",
          "U16": "<u2", "I32": "<i4", "U32": "<u4", "I64": "<i8", "U64": "<u8", "BOOL": "?"}


def read(path):
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError("header too small")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError("header length %d runs past the file" % n)
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    tensors = {}
    covered = 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        begin, end = info["data_offsets"]
        if begin != covered:
            raise ValueError("%s: begins at %d, expected %d" % (name, begin, covered))
        dt = np.dtype(DTYPES[info["dtype"]])
        shape = tuple(info["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * dt.itemsize:
            raise ValueError("%s: %d bytes for shape %s" % (name, end - begin, shape))
        tensors[name] = np.frombuffer(data[begin:end], dtype=dt).reshape(shape)
        covered = end
    if covered != len(data):
        raise ValueError("%d trailing bytes" % (len(data) - covered))
    return tensors, meta, n


def check(helper):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "sample.safetensors")
        subprocess.run([helper, out], check=True)
        tensors, meta, n = read(out)
    expected = {
        "fc1/W": (np.arange(12, dtype=np.float32) * np.float32(0.25) - np.float32(1)).reshape(3, 4),
        "fc1/b": (np.float32(0.5) * np.arange(3, dtype=np.float32)).reshape(3, 1),
        "optim/m/fc1/W": (np.arange(12, dtype=np.float64) / 3.0).reshape(3, 4),
        "optim/step": np.array(42.0, dtype=np.float64),
    }
    ok = True
    if n % 8:
        print("header length %d is not a multiple of 8" % n)
        ok = False
    if sorted(tensors) != sorted(expected):
        print("names differ: file %s, expected %s" % (sorted(tensors), sorted(expected)))
        ok = False
    for name, want in expected.items():
        got = tensors.get(name)
        if got is None:
            continue
        if got.dtype != want.dtype or got.shape != want.shape or \
                got.tobytes() != want.tobytes():
            print("%s: got %s %s %r, expected %s %s %r" % (name, got.dtype, got.shape, got,
                                                          want.dtype, want.shape, want))
            ok = False
        else:
            print("%-14s %s %-7s ok" % (name, got.dtype, got.shape))
    if meta != {"epoch": "7", "name": "caf\u00e9"}:
        print("metadata differs: %r" % meta)
        ok = False
    return 0 if ok else 1


def main(argv):
    if len(argv) == 3 and argv[1] == "--check":
        return check(argv[2])
    if len(argv) != 2:
        print(__doc__)
        return 2
    tensors, meta, _ = read(argv[1])
    for k, v in meta.items():
        print("metadata %s = %s" % (k, v))
    for name, t in tensors.items():
        print("%s %s %s" % (name, t.dtype, list(t.shape)))
        print(np.array2string(t, threshold=20))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
