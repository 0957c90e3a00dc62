"""The house: one home per job, no import cycle, light imports where no picture is drawn, and docs
a newcomer can read."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sam_explain"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(path: Path) -> set:
    """The sam_explain modules that ``path`` imports when it is imported (not inside functions), but its
    own packages."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sam_explain")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("sam_explain"):
                continue
            found.add(base)
            for alias in node.names:  # "from . import x" imports the module x
                if (PACKAGE.parent / (base.replace(".", "/") + f"/{alias.name}.py")).exists() or \
                        (PACKAGE.parent / base.replace(".", "/") / alias.name / "__init__.py").exists():
                    found.add(f"{base}.{alias.name}")
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return found - {name} - ancestors  # a module's own packages are imported before it anyway


def test_no_module_level_import_cycle():
    graph = {module_name(p): module_level_imports(p) for p in PACKAGE.rglob("*.py")}
    state, cycles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"module-level import cycles: {cycles}"


@pytest.mark.parametrize("module", ["checkpoint", "tracing", "attention", "modeling", "shapes", "toy"])
def test_modules_that_draw_nothing_do_not_load_matplotlib(module):
    code = f"import sys, sam_explain.{module}; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_train_toy_help_lists_at_most_six_schedules(capsys):
    from sam_explain.cli import main
    from sam_explain.toy.schedules import DEFAULT_SCHEDULE, SCHEDULES

    with pytest.raises(SystemExit) as exit_:
        main(["train-toy", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert len(SCHEDULES) <= 6 and all(name in text for name in SCHEDULES)
    assert DEFAULT_SCHEDULE in SCHEDULES and "the default" in text


def test_one_home_for_each_job():
    import importlib

    build_sam, checkpoint, build = (importlib.import_module(f"sam_explain.{m}")
                                    for m in ("build_sam", "checkpoint", "modeling.build"))

    assert build_sam.load_state_dict_strict is checkpoint.load_state_dict_strict
    assert build_sam.detect_model_type is checkpoint.detect_model_type
    assert build_sam.make_sam is checkpoint.make_sam is build.make_sam
    assert build_sam.build_mask_decoder is build.build_mask_decoder
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "matplotlib.use(" not in text, f"{path} picks matplotlib's backend: leave that to the user"
        if path.parent.name != "figures":
            assert "pyplot" not in text, f"{path} draws with pyplot outside figures/"


def test_readme_and_model_card_stay_short():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 160
    assert len((ROOT / "docs" / "toy_model.md").read_text(encoding="utf-8").splitlines()) <= 250
