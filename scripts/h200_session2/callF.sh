# call F (nvidia-h200, one GPU): the INT4 table (issue 15) on windows 0-39 and 40-79 in one run: auto-round at its
# defaults (200 iterations, batch 8) through the carried wheel, bnb nf4, and every sysq INT4 variant
# (scripts/int4_table.py GPU_CONFIGS). --time-limit 300: no configuration starts after 5 minutes (rows in priority
# order: auto-round, RTN and learned w4a16, the w4a8 / w4a4+kv4 rows, @auto, then the 200x8 learned budgets), so
# the call ends within ~7 minutes with the table written; the same command again on the warm machine continues
# with the rows left (every row and quantized model done is reused from $R/int4).
# Needs what call B set up (.gpu/ wheels incl. auto-round 0.16.1 and bitsandbytes, the GGUF halves, data with
# wikitext2; piqa/arc are not used).
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
mkdir -p /tmp/venvs/autoround/bin && printf '#!/bin/sh\nPYTHONPATH=/tmp/site exec python3 "$@"\n' > /tmp/venvs/autoround/bin/python && chmod +x /tmp/venvs/autoround/bin/python && touch /tmp/venvs/autoround/.complete
export SYSQ_PEER_VENVS=/tmp/venvs
timeout 560 python3 scripts/int4_table.py --device cuda --quiet --time-limit 300 --out $R/int4 > $R/int4.log 2>&1
tar czf $OUT/callF.tgz -C /tmp res
tail -c 6000 $R/int4.log
