#!/usr/bin/env python
"""Repack the bitsandbytes wheel with only the native libraries one H200 call needs, so it fits a device carry.

    python scripts/h200_session5/repack_bnb.py WHEEL OUT_DIR [--keep cuda130,cpu]

The PyPI wheel (bitsandbytes 0.50.2, 43 MB) ships one libbitsandbytes_*.so per CUDA / ROCm / XPU version;
bitsandbytes loads libbitsandbytes_cuda{torch.version.cuda without the dot}.so, so the device's torch 2.11+cu130
needs only cuda130 (3.9 MB; cpu kept as the fallback). RECORD loses the dropped files' lines; the file name stays.
"""
import argparse
import re
import zipfile
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("wheel")
    p.add_argument("out")
    p.add_argument("--keep", default="cuda130,cpu", help="library suffixes kept (default: %(default)s)")
    a = p.parse_args()
    keep = {f"libbitsandbytes_{k}.so" for k in a.keep.split(",")}
    src = Path(a.wheel)
    dst = Path(a.out) / src.name
    dst.parent.mkdir(parents=True, exist_ok=True)

    def dropped(name: str) -> bool:
        base = name.rsplit("/", 1)[-1]
        return bool(re.fullmatch(r"libbitsandbytes_.*\.so", base)) and base not in keep

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if dropped(info.filename):
                continue
            data = zin.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                data = "".join(ln for ln in data.decode().splitlines(keepends=True)
                               if not dropped(ln.split(",", 1)[0])).encode()
            zout.writestr(info, data)
    print(f"{dst}: {dst.stat().st_size / 2**20:.1f} MiB (from {src.stat().st_size / 2**20:.1f} MiB), kept "
          f"{', '.join(sorted(keep))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
