"""Mitigation driven by the outlier report: smooth, clip, preserve (channels, tokens), rotate.

    plan = sysq.plan(report, "w8a8-static")          # MitigationPlan (YAML round trip, hand-editable)
    sysq.mitigate(model, plan, calib)                 # in place, before sysq.quantize
"""
from .plan import MitigationPlan
