"""Time loading the default model twice: the first load converts the GGUF, the second reads the cache.

    python scripts/bench_load.py            # uses a fresh temporary SYSQ_CACHE so the first load converts
"""
import argparse
import os
import tempfile
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--keep-cache", action="store_true", help="use $SYSQ_CACHE as is instead of a fresh one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.keep_cache:
            os.environ["SYSQ_CACHE"] = tmp
        import sysq  # after SYSQ_CACHE is set
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            sysq.load(args.model)
            times.append(time.perf_counter() - t0)
    print(f"model={args.model} first load {times[0]:.2f} s (GGUF parse + conversion), "
          f"second load {times[1]:.2f} s (cached safetensors), ratio {times[0] / times[1]:.0f}x")


if __name__ == "__main__":
    main()
