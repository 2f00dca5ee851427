"""Quantize a model with a sysq recipe (same arguments as `sysq quantize`).

    python scripts/quantize.py --model smollm2-135m --recipe w8a8-static --calib wikitext2-valid --n 32 \
        --seqlen 512 --out out/w8a8-static
"""
import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sysq.errors import SysqError  # noqa: E402
from sysq.quant import command  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    command.add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return command.run(args)
    except SysqError as e:
        print(f"quantize: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
