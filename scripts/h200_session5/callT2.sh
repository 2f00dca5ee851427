# call T2 (a transfer call, same machine): carry .gpu/b .gpu/whl2 (the GGUF's second piece, auto-round and datasets
# wheels): about 53 MiB with the tree
source scripts/h200_session5/env.sh
ls -la /tmp/gg.* ; python3 -c "import auto_round, datasets; print('auto-round', auto_round.__version__, 'datasets', datasets.__version__)"
