"""Rebuild call I5's merged table from its parts' results.json (no model, no GPU): the table call I5 printed keyed
merged rows by config name and showed the 32-window rows' numbers for the 8-window rows of the same config too.
    python scripts/h200_session5/merge_i5.py results/h200/s5/res5 > results/h200/s5/res5/i5-all/table-fixed.md"""
import importlib.util
import json
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("int4_table", root / "scripts" / "int4_table.py")
t = importlib.util.module_from_spec(spec)
spec.loader.exec_module(t)
R = Path(sys.argv[1])
PARTS = ["peer", "peers", "w4a16-g64", "w4a16-g128", "w4a8", "w4a4", "w4a4-ag64", "w4a16-g64-tok", "w4a16-g64-c32",
         "peer-c32", "w4a16-g64-tok-c32", "w4a16-g128-tok", "w4a16-g64-tok-noplan", "w4a4-tok"]
offsets = [0, 40]
own = t._merged(R / "i5-all", offsets)
merged = {o: [] for o in offsets}
for p in PARTS:
    if (R / f"i5-{p}" / "w0" / "results.json").is_file():
        rows = {o: (t._merged(R / f"i5-{p}", [o])[o] if (R / f"i5-{p}" / f"w{o}" / "results.json").is_file() else [])
                for o in offsets}
        for o in offsets:
            merged[o] += rows[o]
s = t.GridSettings(**{k: v for k, v in own[0][0].settings.items() if k in t.GridSettings.__dataclass_fields__})
print(t.table(own, s, merged, "Rebuilt from the parts' results.json by scripts/h200_session5/merge_i5.py."), end="")
