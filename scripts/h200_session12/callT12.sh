# calls T12a / T12b (one H200, a fresh machine, back to back: transfer calls). The default model's GGUF in three
# pieces (head -c / tail -c of the 98,362,432-byte file: .gpu/a/gg.00, .gpu/b/gg.01 40,000,000 bytes each, .gpu/c/gg.02
# the rest), each call under 64 MiB with the tree: T12a carries .gpu/a .gpu/data .gpu/whl2 (WikiText-2 test raw and
# valid tokens; the gguf 0.19.0 wheel), T12b .gpu/b. env.sh copies the pieces to /tmp and joins them (md5) when all
# have arrived (call G12 brings .gpu/c).
source scripts/h200_session5/env.sh
ls -la /tmp/gg.* /tmp/data 2>&1 | head; python3 -c "import gguf; print('gguf', gguf.__file__)" 2>&1 | tail -1
