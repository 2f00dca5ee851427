# call T1 (nvidia-h200, fresh machine; a transfer call): carry .gpu/a .gpu/whl1 (the GGUF's first piece, transformers
# 5.24 / compressed-tensors 0.20.1 / pydantic wheels): about 56 MiB with the tree
source scripts/h200_session5/env.sh
ls -la /tmp/gg.* ; python3 -c "import transformers, compressed_tensors; print('transformers', transformers.__version__, 'compressed-tensors', compressed_tensors.__version__)"
