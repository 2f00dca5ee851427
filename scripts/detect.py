"""Detect systematic outliers (same arguments as `sysq detect`).

    python scripts/detect.py --model smollm2-135m --data wikitext2-valid --n 32 --seqlen 512 --seed 0 --out out/detect
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sysq.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["detect", *sys.argv[1:]]))
