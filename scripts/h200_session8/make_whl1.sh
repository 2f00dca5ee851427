# .gpu/whl1 (ignored): the wheels every device call carries on top of the device image (torch 2.11, transformers
# 5.17): transformers 5.24 and compressed-tensors 0.20.1 (the versions sysq's export was measured with), pydantic.
# A fresh checkout has no .gpu/: run this first (about 15 MiB; PyPI only).
set -e
cd "$(dirname "$0")/../.."
D=.gpu/whl1; mkdir -p $D
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d $D "$@"; }
dl transformers==5.24.0 compressed-tensors==0.20.1 pydantic==2.12.5 pydantic-core==2.41.5 annotated-types==0.7.0 \
  typing-inspection==0.4.2 loguru==0.7.3 huggingface-hub==1.33.0
ls -la $D; du -sh $D
