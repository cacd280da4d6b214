#!/usr/bin/env python3
"""Derives the Winograd F(4, 3) transforms that crates/zoo-core/csrc/wino.cpp hard-codes, exactly.

Toom-Cook on the given points plus the point at infinity: A^T is the Vandermonde matrix of the
points (the last column for infinity), G the filter's interpolation weights, and B^T solves
A^T [(G g) * (B^T d)] = correlation(d, g) for every g and d. Prints the three matrices and checks
a 2-D tile numerically against a direct correlation.

    .venv/bin/python tools/wino_transforms.py
"""
import random

import sympy as sp


def derive(m, r, points):
    n = m + r - 1
    assert len(points) == n - 1
    p = [sp.Rational(x) for x in points]
    at = sp.zeros(m, n)
    for i in range(m):
        for k in range(n - 1):
            at[i, k] = p[k] ** i
    at[m - 1, n - 1] = 1
    g = sp.zeros(n, r)
    for k in range(n - 1):
        norm = sp.prod([p[k] - p[l] for l in range(n - 1) if l != k])
        for j in range(r):
            g[k, j] = p[k] ** j / norm
    g[n - 1, r - 1] = 1
    bt = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"b{i}_{j}"))
    eqs = [
        sum(at[i, k] * g[k, j] * bt[k, t] for k in range(n)) - (1 if t == i + j else 0)
        for i in range(m)
        for j in range(r)
        for t in range(n)
    ]
    (sol,) = sp.solve(eqs, list(bt), dict=True)
    return at, g, bt.subs(sol)


def check_2d(m, r, at, g, bt):
    n = m + r - 1
    d = sp.Matrix(n, n, lambda i, j: random.randint(-9, 9))
    w = sp.Matrix(r, r, lambda i, j: random.randint(-9, 9))
    y = at * (g * w * g.T).multiply_elementwise(bt * d * bt.T) * at.T
    for i in range(m):
        for j in range(m):
            direct = sum(w[a, b] * d[i + a, j + b] for a in range(r) for b in range(r))
            assert y[i, j] == direct, (i, j, y[i, j], direct)


def main():
    for m, r, points in [(4, 3, [0, 1, -1, 2, -2])]:
        at, g, bt = derive(m, r, points)
        check_2d(m, r, at, g, bt)
        print(f"F({m}x{m}, {r}x{r}), points {points} and infinity (exact 2-D check passed)")
        for name, mat in [("BT", bt), ("G", g), ("AT", at)]:
            print(f"  {name} = {mat.tolist()}")


if __name__ == "__main__":
    main()
