#!/usr/bin/env python
"""The comparison grid: FP, sysq recipes (with and without mitigation plans) and peer baselines
(bitsandbytes int8 / nf4, optimum-quanto W8A8 / W4), one row each, measured the same way.

    python scripts/evaluate.py --configs fp,w8a8-static,w8a8-static@auto,bnb-int8,quanto-w8a8 \\
        --seqlen 512 --windows 40 --tasks piqa_local,arc_easy_local --limit 200 --out out/grid

Writes OUT/results.{json,csv,md,png}; rows already in OUT/rows for the same settings are reused.
Exit code 2 when a configuration failed (its error is in the table; the other rows are kept).
"""
import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.command import add_grid_arguments, run_grid_command  # noqa: E402
from sysq.errors import SysqError  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_grid_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_grid_command(args)
    except SysqError as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
