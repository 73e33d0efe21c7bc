#!/usr/bin/env python3
"""Key paths of JSON files, for checking that an example still writes the shape its published
results/ file has (and that scripts reading them expect).

    python3 scripts/json_keys.py FILE               # print each key path and its value types
    python3 scripts/json_keys.py PUBLISHED FRESH    # compare two files' key paths and types

A path is the keys from the root joined by "/", with "[]" for "any element of an array" (all
elements merged) and "{}" for "any key of an object whose keys are data" (see --data-keys: a
table keyed by model name, say).
Types are null, bool, int, float, str, array, object. With two files it prints the paths only
one has and the paths whose type sets differ, and exits 1 if there are any. A path that is only
null in one file and a number in the other is reported too, but as a note: one run can fail
where another succeeds.

Several JSON documents in one file (one per line, as lbfgsb_compare prints) are merged.
"""

import argparse
import json
import sys
from collections import defaultdict


def kind(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, list):
        return "array"
    return "object"


def walk(v, path, out, data_keys):
    out[path].add(kind(v))
    if isinstance(v, dict):
        for k, x in v.items():
            data = path in data_keys or path.rsplit("/", 1)[-1] in data_keys
            step = "{}" if data else k
            walk(x, f"{path}/{step}", out, data_keys)
    elif isinstance(v, list):
        for x in v:
            walk(x, f"{path}/[]", out, data_keys)


def load(path):
    text = open(path, encoding="utf-8").read()
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        docs = []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("{") or line.startswith("["):
                docs.append(json.loads(line))
        if not docs:
            raise
        return docs


def paths(path, data_keys):
    out = defaultdict(set)
    for doc in load(path):
        walk(doc, "", out, data_keys)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--data-keys",
        action="append",
        default=[],
        metavar="PATH",
        help='a path (e.g. "/rows/[]/errors"), or a key name anywhere (e.g. "errors"), whose '
        'object keys are data, compared as one "{}"',
    )
    args = p.parse_args()
    if len(args.files) == 1:
        for k, t in sorted(paths(args.files[0], set(args.data_keys)).items()):
            print(k or "/", " ".join(sorted(t)))
        return 0
    if len(args.files) != 2:
        p.error("one or two files")
    a = paths(args.files[0], set(args.data_keys))
    b = paths(args.files[1], set(args.data_keys))
    bad = 0
    for k in sorted(a.keys() - b.keys()):
        print(f"only in {args.files[0]}: {k}")
        bad += 1
    for k in sorted(b.keys() - a.keys()):
        print(f"only in {args.files[1]}: {k}")
        bad += 1
    for k in sorted(a.keys() & b.keys()):
        if a[k] != b[k]:
            ta, tb = a[k] - {"null"}, b[k] - {"null"}
            # int and float are one JSON number to its readers, but a change is worth seeing.
            note = "note" if (ta == tb or not ta or not tb) else "types"
            print(f"{note} {k or '/'}: {sorted(a[k])} vs {sorted(b[k])}")
            bad += note == "types"
    print(f"{len(a)} and {len(b)} paths, {bad} differences")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
