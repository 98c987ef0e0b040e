"""Is the activation kernel's reciprocal division correctly rounded? A check against exact rationals.

``quant_kernels.act_quant._divide`` computes y / s, for a scale s in [2^-96, 2^96), as
q0 = y * RN(1/s), then q = fma(fma(-q0, s, y), RN(1/s), q0) (Markstein's correction), and
the twin divides with IEEE rounding: the codes agree only if q == RN(y / s) bit for bit.
This draws random fp32 scales in that range and quotients in [-9, 9] (y as float32 and as
bfloat16 values), emulates the kernel's steps in numpy (products exact in float64, the
final sum in extended precision) and compares each result that differs from the
float64-rounded quotient with the exactly rounded one (``fractions.Fraction``). It also
runs scales just below 2^-96 with values near the rounding ties, where the remainder
loses bits, to show why the kernel divides element by element there.

    python benchmarks/division_check.py --samples 20000000 --out benchmarks/results/division_check
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from fractions import Fraction

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.result_files import command_line, write_result_files  # noqa: E402

F32 = np.float32
CHUNK = 1_000_000
# Rounding ties of INT4 and E2M1 codes (quotients where a wrong last bit changes a code).
TIES = (0.25, 0.5, 0.75, 1.25, 1.5, 1.75, 2.5, 3.5, 4.5, 5.0, 5.5, 6.5)


def rn32(value: Fraction) -> float:
    """The float32 nearest to an exact rational, ties to even."""
    guess = F32(float(value))
    neighbours = [np.nextafter(guess, F32(-np.inf)), guess, np.nextafter(guess, F32(np.inf))]
    return min(neighbours, key=lambda v: (abs(Fraction(float(v)) - value), int(np.array(v).view(np.uint32)) & 1))


def kernel_quotients(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The kernel's fast division, step by step, each step rounded once to float32."""
    r = (1.0 / s.astype(np.float64)).astype(F32)
    q0 = (y.astype(np.float64) * r).astype(F32)  # the product is exact in float64
    remainder = (y.astype(np.float64) - q0.astype(np.float64) * s).astype(F32)  # exact in float64 (Sterbenz)
    return (q0.astype(np.longdouble) + remainder.astype(np.longdouble) * r.astype(np.longdouble)).astype(F32)


def mismatches(y: np.ndarray, s: np.ndarray) -> int:
    """How many kernel quotients differ from RN(y / s), confirmed with exact rationals."""
    got = kernel_quotients(y, s)
    candidates = np.nonzero(got != (y.astype(np.float64) / s).astype(F32))[0]
    wrong = 0
    for i in candidates:
        exact = rn32(Fraction(float(y[i])) / Fraction(float(s[i])))
        wrong += int(exact != got[i])
    return wrong


def random_case(rng: np.random.Generator, n: int, exponents: tuple[int, int], bf16: bool, near_ties: bool):
    s = (rng.uniform(1, 2, n) * 2.0 ** rng.integers(*exponents, n)).astype(F32)
    if near_ties:  # within 2 ulps of tie * s
        y = (rng.choice(TIES, n) * rng.choice([-1.0, 1.0], n) * s.astype(np.float64)).astype(F32)
        y = (y.view(np.int32) + rng.integers(-2, 3, n).astype(np.int32)).view(F32)
    else:
        y = (rng.uniform(-9, 9, n) * s.astype(np.float64)).astype(F32)
    if bf16:
        y = (y.view(np.uint32) & 0xFFFF0000).view(F32)
    return y, s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=4_000_000, help="quotients per case")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output prefix: PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    cases = [("scales 2^-96 .. 2^96, float32 y", (-96, 96), False, False),
             ("scales 2^-96 .. 2^96, bfloat16 y", (-96, 96), True, False),
             ("scales 2^-96 .. 2^96, float32 y within 2 ulps of a tie", (-96, 96), False, True),
             ("scales 2^-126 .. 2^-97 (divided element by element), y near a tie", (-126, -96), False, True)]
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "seed": args.seed, "samples": args.samples,
              "command": command_line("division_check.py", argv if argv is not None else sys.argv[1:]),
              "cases": []}
    for name, exponents, bf16, near in cases:
        wrong = 0
        for start in range(0, args.samples, CHUNK):
            wrong += mismatches(*random_case(rng, min(CHUNK, args.samples - start), exponents, bf16, near))
        result["cases"].append({"case": name, "quotients": args.samples, "not_correctly_rounded": wrong})
        print(f"{name}: {wrong} of {args.samples} not correctly rounded", flush=True)
    lines = ["# The activation kernel's reciprocal division against exact rationals", "",
             f"Date: {result['date']}. Command: `{result['command']}`", "",
             "| case | quotients | not correctly rounded |", "|---|---|---|"]
    lines += [f"| {c['case']} | {c['quotients']:,} | {c['not_correctly_rounded']:,} |" for c in result["cases"]]
    write_result_files(args.out, result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
