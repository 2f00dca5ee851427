"""Generation speed and memory of FP and every real backend, eager and compiled (same arguments and behaviour as
`sysq bench`: it is that command; evaluation/bench.py says what it measures).

    python scripts/bench_generate.py --threads 1 --out results/kernels/bench-cpu
    python scripts/bench_generate.py --device cuda --model config:llama3-8b --phases prefill --out $OUT/prefill
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sysq.cli import main as cli_main  # noqa: E402


def main(argv=None) -> int:
    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
