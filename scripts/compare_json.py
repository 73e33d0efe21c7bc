#!/usr/bin/env python3
"""Compare two result JSON files value by value, ignoring wall-clock fields.

    python3 scripts/compare_json.py OLD.json NEW.json

Every number, string and list length must be equal (exact float equality: a refactor that
claims to change nothing must reproduce every digit). Keys whose name contains `seconds`, `ms`,
`wall` or `time` are timings and are skipped. Exits 1 if anything differs.
"""

import json
import sys

TIMING = ("seconds", "ms", "wall", "time")


def walk(x, y, path, diffs, count):
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            if any(t in k for t in TIMING):
                continue
            if k not in x or k not in y:
                diffs.append(f"{path}/{k}: present in one file only")
                continue
            walk(x[k], y[k], f"{path}/{k}", diffs, count)
    elif isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            diffs.append(f"{path}: {len(x)} vs {len(y)} items")
            return
        for i, (u, v) in enumerate(zip(x, y)):
            walk(u, v, f"{path}[{i}]", diffs, count)
    else:
        count[0] += 1
        if x != y:
            diffs.append(f"{path}: {x!r} vs {y!r}")


def main():
    old, new = (json.load(open(p)) for p in sys.argv[1:3])
    diffs, count = [], [0]
    walk(old, new, "", diffs, count)
    print(f"{sys.argv[1]} vs {sys.argv[2]}: {count[0]} values compared (timings skipped), "
          f"{len(diffs)} differ")
    for d in diffs[:20]:
        print("  " + d)
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
