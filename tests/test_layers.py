"""The pipeline's layering: sysq's core modules never reach up into the evaluator (only the CLI layer may)."""
import ast
from pathlib import Path

SYSQ = Path(__file__).resolve().parents[1] / "sysq"
CLI_LAYER = {SYSQ / "cli.py"} | set((SYSQ / "commands").rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_core_modules_do_not_import_evaluation():
    offenders = {str(p.relative_to(SYSQ)): sorted(n for n in _imports(p) if n.split(".")[0] == "evaluation")
                 for p in SYSQ.rglob("*.py") if p not in CLI_LAYER}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"core modules importing evaluation/: {offenders}"


def test_the_check_sees_the_cli_layer_importing_evaluation():
    assert any(n.startswith("evaluation") for p in CLI_LAYER for n in _imports(p))
