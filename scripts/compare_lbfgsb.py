#!/usr/bin/env python3
"""Side-by-side comparison of blindspot's L-BFGS-B with SciPy's minimize(method="L-BFGS-B").

Both solvers get the same problems, starting points, bounds and tolerances
(ftol=2.2e-9, pgtol/gtol=1e-5, m=10, maxls=20, iteration limit out of reach).
The Rust side is `examples/lbfgsb_compare.rs`; this script builds and runs it, runs SciPy,
and prints a markdown table.

    pip install numpy scipy        # not needed by the crate or its CI
    python3 scripts/compare_lbfgsb.py [--reps 5]
"""

import argparse
import json
import os
import pathlib
import subprocess
import time

# One BLAS thread, like the Rust solver: on a small shared machine a threaded BLAS spends
# most of its time oversubscribing cores on these tiny vector operations. Must precede numpy.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


def rosenbrock(x):
    """Extended Rosenbrock: sum over pairs of 100 (x_{2i+1} - x_{2i}^2)^2 + (1 - x_{2i})^2."""
    a, b = x[0::2], x[1::2]
    t = b - a * a
    f = np.sum(100.0 * t * t + (1.0 - a) ** 2)
    g = np.empty_like(x)
    g[0::2] = -400.0 * a * t - 2.0 * (1.0 - a)
    g[1::2] = 200.0 * t
    return f, g


def rosenbrock_bounds(n):
    """Same bounds as examples/lbfgsb_compare.rs, by pair k = i // 2."""
    lo = np.full(n, -np.inf)
    hi = np.full(n, np.inf)
    k = np.arange(n // 2)
    hi[2 * k[k % 3 == 0]] = 0.5
    lo[2 * k[k % 3 == 1]] = 1.2
    boxed = k[(k % 3 == 2) & (k % 5 == 2)]
    for i in (2 * boxed, 2 * boxed + 1):
        lo[i], hi[i] = -2.0, 2.0
    return lo, hi


def rosenbrock_start(n):
    return np.where(np.arange(n) % 2 == 0, -1.2, 1.0)


def quadratic(n):
    diag = 3.0 + (np.arange(n) % 10) * 0.5
    b = 10.0 * np.sin(np.arange(1, n + 1, dtype=float))

    def fun(x):
        ax = diag * x
        ax[1:] -= x[:-1]
        ax[:-1] -= x[1:]
        return 0.5 * x @ ax - b @ x, ax - b

    return fun


def scipy_solve(fun, x0, lo, hi, reps):
    opts = dict(maxcor=10, ftol=2.2e-9, gtol=1e-5, maxiter=100_000, maxfun=10_000_000, maxls=20)
    bounds = list(zip(lo, hi))
    times, res = [], None
    for _ in range(reps):
        t = time.perf_counter()
        res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=opts)
        times.append(time.perf_counter() - t)
    return res, float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--example", "lbfgsb_compare"], cwd=ROOT, check=True
    )
    out = subprocess.run(
        [str(ROOT / "target/release/examples/lbfgsb_compare"), str(args.reps)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    ours = {(r["problem"], r["n"]): r for r in map(json.loads, out.strip().splitlines())}

    cases = []
    for n in (2, 100, 1000, 10_000):
        lo, hi = rosenbrock_bounds(n)
        cases.append(("rosenbrock", n, rosenbrock, rosenbrock_start(n), lo, hi))
    n = 1000
    cases.append(("rosenbrock-unbounded", n, rosenbrock, rosenbrock_start(n),
                  np.full(n, -np.inf), np.full(n, np.inf)))
    cases.append(("quadratic", n, quadratic(n), np.zeros(n), np.full(n, -1.0), np.full(n, 1.0)))

    print("| problem | n | f ours | f scipy | rel diff (÷ max(abs f, 1)) | evals ours/scipy | iters ours/scipy "
          "| ms ours/scipy (median) | stop ours / scipy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, n, fun, x0, lo, hi in cases:
        res, t = scipy_solve(fun, x0, lo, hi, args.reps)
        r = ours[(name, n)]
        # Relative to max(|f|, 1), the scale of the ftol test: minima at 0 have no relative digits.
        rel = abs(r["cost"] - res.fun) / max(abs(res.fun), 1.0)
        msg = res.message if isinstance(res.message, str) else res.message.decode()
        print(f"| {name} | {n} | {r['cost']:.12g} | {res.fun:.12g} | {rel:.1e} | "
              f"{r['evals']}/{res.nfev} | {r['iters']}/{res.nit} | "
              f"{1e3 * r['median_seconds']:.3f}/{1e3 * t:.3f} | {r['reason']} / {msg} |")


if __name__ == "__main__":
    main()
