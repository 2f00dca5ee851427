"""Quantize a model around its outliers (same arguments and behaviour as `sysq quantize`: it is that command).

    python scripts/quantize.py --model smollm2-135m --recipe w8a8-static --out out/w8a8-static
    python scripts/quantize.py --recipe w8a8-static --mitigate none --out out/naive
    python scripts/quantize.py --recipe w4a16 --format compressed-tensors --out out/w4a16-ct
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sysq.cli import main as cli_main  # noqa: E402


def main(argv=None) -> int:
    return cli_main(["quantize", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
