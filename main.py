"""LLM-FP4-style driver: ``--quant_config NAME --qbits W A KV [Wexp Aexp KVexp]``.

Exponent bits 0 (or omitted) mean INT for that tensor; e.g. ``--qbits 4 4 4 2 2 2`` is
FP4 E2M1 everywhere and ``--qbits 4 4 4`` INT4. Bits 16 leave a tensor in full
precision. Builds a recipe and hands it to the pipeline; no algorithm lives here.
"""

from __future__ import annotations

import argparse
import sys

from configs import QBITS_CONFIGS, RunConfig, qbits_recipe
from pipeline.cli import add_common_args, common_config_kwargs, run_driver


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    q = p.add_argument_group("quantization")
    q.add_argument("--qbits", type=int, nargs="+", default=[16, 16, 16], metavar="N",
                   help="W A KV bits, optionally followed by W A KV exponent bits")
    q.add_argument("--quant_config", default="RTN_config_llama",
                   help=f"named quantization config: {', '.join(QBITS_CONFIGS)}")
    return p


def build_config(args: argparse.Namespace) -> RunConfig:
    return RunConfig(quant=qbits_recipe(args.quant_config, args.qbits), **common_config_kwargs(args))


def main(argv: list[str] | None = None) -> int:
    return run_driver(build_parser(), build_config, argv)


if __name__ == "__main__":
    sys.exit(main())
