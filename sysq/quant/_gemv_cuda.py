"""sysq's CUDA kernels (csrc/*.cu), built with torch.utils.cpp_extension on first use (nvcc and ninja on the
machine; the build is cached under TORCH_EXTENSIONS_DIR). Without them the modules keep torch's kernels."""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)
SOURCE = Path(__file__).parent / "csrc" / "int4_mma.cu"


@functools.lru_cache(maxsize=None)
def extension():
    """The built module (raises where it cannot be built: no CUDA toolkit, no compiler)."""
    from torch.utils.cpp_extension import load
    log.info("building %s (once per machine)", SOURCE.name)
    return load(name="sysq_int4_mma", sources=[str(SOURCE)], extra_cuda_cflags=["-O3", "-lineinfo"], verbose=False)


@functools.lru_cache(maxsize=None)
def builds() -> bool:
    """Whether the CUDA kernels run here: a GPU with mma.m16n8k16 in bf16 (compute capability >= 8.0) and a
    toolkit that builds them. A failed build is logged once and answered False."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0):
        return False
    try:
        extension()
        return True
    except Exception as e:  # noqa: BLE001 - any build failure means "not here"; the reason is logged
        log.warning("sysq's CUDA int4 GEMV did not build (%s: %s); int4 decode keeps tinygemm",
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return False
