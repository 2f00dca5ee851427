"""Command implementations behind `sysq` (sysq/cli.py parses, these run): the layer above the library and the
evaluator. Core modules of sysq/ never import evaluation/; only sysq/cli.py and sysq/commands/ may."""
