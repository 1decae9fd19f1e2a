#!/usr/bin/env python3
"""Checks that the programs shown in the documents are the files the test suite builds.

A code block preceded by the line `<!-- code: PATH -->` must hold exactly the file PATH
(relative to the source root). With --all-of DIR, every file in DIR must be shown in the
given documents. Exit 1, naming the document, the file and the first differing line, when one
is stale; the fix is to paste the file into the block again.

usage: check-doc-code.py SOURCE_ROOT DOC.md [DOC.md ...] [--all-of DIR]
"""
import os
import re
import sys

MARK = re.compile(r"^<!-- code: (\S+) -->$")


def blocks(doc_path):
    """(path named by the marker, the block's text, line number) for every marked block."""
    lines = open(doc_path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        m = MARK.match(lines[i])
        if m:
            start = i + 1
            if start >= len(lines) or not lines[start].startswith("```"):
                yield m.group(1), None, i + 1
            else:
                end = start + 1
                while end < len(lines) and lines[end] != "```":
                    end += 1
                yield m.group(1), "\n".join(lines[start + 1:end]) + "\n", i + 1
                i = end
        i += 1


def main(argv):
    args = argv[1:]
    all_of = None
    if "--all-of" in args:
        k = args.index("--all-of")
        all_of = args[k + 1]
        del args[k:k + 2]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    root, docs = args[0], args[1:]
    bad = 0
    shown = set()
    for doc in docs:
        for rel, text, line in blocks(os.path.join(root, doc)):
            shown.add(os.path.normpath(rel))
            if text is None:
                print(f"{doc}:{line}: the marker for {rel} is not followed by a code block")
                bad += 1
                continue
            want = open(os.path.join(root, rel), encoding="utf-8").read()
            if text != want:
                a, b = text.split("\n"), want.split("\n")
                n = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]),
                         min(len(a), len(b)))
                print(f"{doc}:{line}: the block shows {rel} as it is not: first difference at "
                      f"line {n + 1} of the file:\n  document: {a[n] if n < len(a) else '(end)'}"
                      f"\n  file:     {b[n] if n < len(b) else '(end)'}")
                bad += 1
    if all_of:
        for name in sorted(os.listdir(os.path.join(root, all_of))):
            rel = os.path.normpath(os.path.join(all_of, name))
            if rel not in shown:
                print(f"{rel} is not shown in {', '.join(docs)}")
                bad += 1
    if bad:
        print(f"{bad} stale or missing program(s): paste the file into its block again")
        return 1
    print(f"{len(shown)} program(s) shown as they are")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
