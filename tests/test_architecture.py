"""The layers of docs/architecture.md: imports point down only, and the command line starts without torch."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "alter"
# Lower numbers sit lower. A module may import its own package and any package strictly below it.
LAYERS = {"errors": 0, "io": 1, "entropy": 1, "resources": 1, "metrics": 1, "__init__": 1,
          "models": 2, "data": 2, "adapters": 3, "methods": 4, "training": 5, "evaluation": 5,
          "report": 6, "pipelines": 7, "cli": 8}


def room(module: str) -> str:
    """The package (or top-level module) of a dotted name inside alter."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def test_every_import_points_down_the_layers():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = room("alter." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        assert source in LAYERS, f"{path}: unknown room {source!r}; add it to docs/architecture.md and LAYERS"
        for module, line in imports_of(path):
            if module != "alter" and not module.startswith("alter."):
                continue
            target = room(module)
            if target != source and LAYERS[target] >= LAYERS[source]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} ({source}) imports {module} ({target})")
    assert not upward, "\n".join(upward)


def test_the_layer_test_catches_an_upward_import(tmp_path):
    """The check above can fail: a module of `methods` that imports `training` is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from alter.training.loop import train\n")
    assert [m for m, _ in imports_of(bad)] == ["alter.training.loop"]
    assert LAYERS[room("alter.training.loop")] >= LAYERS[room("alter.methods.npo")]


def test_the_command_line_imports_no_torch():
    probe = "import sys, alter.cli.main; print(sorted(m for m in ('torch', 'transformers', 'sklearn', 'numpy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    help_text = subprocess.run([sys.executable, "-m", "alter.cli.main", "eval", "tofu", "--help"], capture_output=True,
                               text=True, check=True).stdout
    assert "--probes" in help_text and "--retain-logs" in help_text
