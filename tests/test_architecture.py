"""The package's shape: imports point down the layers, no cycles, and every module says its job."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "featx"

# The tiers, bottom to top: a module imports modules of its own tier or of tiers below, never above (README: Layout).
TIERS: dict[str, tuple[str, ...]] = {
    # no featx imports but each other's: settings vocabulary, errors, files, images, timing, reports
    "utilities": ("featx.version", "featx.options", "featx.errors", "featx.config_text", "featx.devices", "featx.cpu",
                  "featx.io", "featx.images", "featx.timing", "featx.compare", "featx.report", "featx.shipped",
                  "featx._moved"),
    # the extractor contract, the families, the catalogue, weights, the inference path
    "model core": ("featx.features", "featx.layers", "featx.necks", "featx.backbones",
                   "featx.checkpoints", "featx.weights", "featx.models", "featx.inference"),
    # what works on a built model: statistics, equivalence checks, drawings, timm/torchvision/mmdet, export
    "model tools and integrations": ("featx.stats", "featx.check", "featx.viz", "featx.integrations", "featx.deploy"),
    # what users run on models: fine-tuning, detector training, extraction and its store, int8 reports
    # (featx.registry: the featx scope's index mmengine imports, holding the model core's registry and training's)
    "applications": ("featx.registry", "featx.train", "featx.detection", "featx.extraction", "featx.int8_report",
                     "featx.store", "featx.store_index", "featx.ray_extract"),
    # the opt-in hardware layer: above everything the core is made of
    "accel": ("featx.accel",),
    "bench and demo": ("featx.bench", "featx.gpu_bench", "featx.extract_bench", "featx.bench_results", "featx.demo"),
    "cli": ("featx.cli", "featx.__main__"),
}
TIER_NAMES = list(TIERS)
# Subsystems that must not import each other in either direction: training is not deployment (the demos that
# chain them live above both), and neither is extraction.
INDEPENDENT = [("featx.train", "featx.deploy"), ("featx.detection", "featx.deploy"), ("featx.train", "featx.extraction"),
               ("featx.detection", "featx.extraction"), ("featx.stats", "featx.check"), ("featx.viz", "featx.check")]
# Who may import the opt-in layer: itself, the benchmarks that measure it, and the command that asks for it.
ACCEL_USERS = ("featx.accel", "featx.bench", "featx.gpu_bench", "featx.cli")
def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _tier(module: str) -> int:
    for rank, prefixes in enumerate(TIERS.values()):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no tier of tests/test_architecture.py: place it")


def _featx_imports(tree: ast.Module, module: str, package: bool) -> tuple[list[str], list[tuple[str, int]]]:
    """(module-level featx imports, function-level featx imports with line numbers)."""
    top, nested = [], []

    def targets(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names if a.name.split(".")[0] == "featx"]
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parent = module.split(".")[: len(module.split(".")) - node.level + (1 if package else 0)]
                base = ".".join(parent + ([base] if base else []))
            if base.split(".")[0] != "featx":
                return []
            # "from featx.x import y" may import the module featx.x.y
            return [f"{base}.{a.name}" if (PACKAGE.parent / Path(*f"{base}.{a.name}".split("."))).with_suffix(".py").exists()
                    or (PACKAGE.parent / Path(*f"{base}.{a.name}".split("."))).is_dir() else base for a in node.names]
        return []

    for node in tree.body:
        top += targets(node)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                nested += [(t, inner.lineno) for t in targets(inner)]
    return top, nested


def _modules() -> dict[str, tuple[list[str], list[tuple[str, int]], ast.Module]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "profiles" in path.parts:  # export profiles are config files, not modules
            continue
        name = _module_name(path)
        tree = ast.parse(path.read_text())
        top, nested = _featx_imports(tree, name, path.name == "__init__.py")
        out[name] = (top, nested, tree)
    return out


MODULES = _modules()


def test_every_module_is_in_a_tier_and_says_its_job():
    for name, (_, _, tree) in MODULES.items():
        if name == "featx":
            continue
        _tier(name)
        doc = ast.get_docstring(tree)
        assert doc and doc.strip().splitlines()[0].strip(), f"{name} has no docstring stating its job"


def upward_imports(modules: dict) -> list[str]:
    """Module-level featx imports that reach a higher tier."""
    wrong = []
    for name, (top, nested, _) in modules.items():
        if name == "featx":  # the facade re-exports the public API
            continue
        for target in top:
            if target != "featx" and _tier(target) > _tier(name):
                wrong.append(f"{name} ({TIER_NAMES[_tier(name)]}) imports {target} ({TIER_NAMES[_tier(target)]})")
    return wrong


def test_imports_point_down_the_tiers():
    wrong = upward_imports(MODULES)
    assert not wrong, "\n".join(wrong)


def test_a_planted_upward_import_is_found():
    planted = dict(MODULES)
    top, nested, tree = planted["featx.features"]
    planted["featx.features"] = (top + ["featx.extraction.pipeline"], nested, tree)
    assert upward_imports(planted) == ["featx.features (model core) imports featx.extraction.pipeline (applications)"]


def upward_strings(modules: dict) -> list[tuple[str, str]]:
    """String constants naming a featx module of a higher tier (mmengine locations, lazy imports)."""
    found = []
    for name, (_, _, tree) in modules.items():
        if name == "featx":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in MODULES \
                    and node.value != "featx" \
                    and _tier(node.value) > _tier(name):
                found.append((name, node.value))
    return found


def test_no_string_location_reaches_upward():
    assert not upward_strings(MODULES), upward_strings(MODULES)


def test_a_planted_upward_location_is_found():
    planted = dict(MODULES)
    top, nested, _ = planted["featx.models.registry"]
    planted["featx.models.registry"] = (top, nested, ast.parse('M = Registry("m", locations=["featx.train.data"])'))
    assert upward_strings(planted) == [("featx.models.registry", "featx.train.data")]


def option_choices(modules: dict) -> dict[tuple[str, ...], list[str]]:
    """Every literal tuple or list of two or more strings that names choices (a module-level constant or an
    argparse ``choices=``), with the modules that write it."""
    seen: dict[tuple[str, ...], list[str]] = {}
    for name, (_, _, tree) in modules.items():
        literals = [n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, (ast.Tuple, ast.List))
                    and all(isinstance(t, ast.Name) and t.id.isupper() for t in n.targets)]
        literals += [k.value for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords
                     if k.arg == "choices" and isinstance(k.value, (ast.Tuple, ast.List))]
        for lit in literals:
            if len(lit.elts) >= 2 and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in lit.elts):
                seen.setdefault(tuple(sorted(e.value for e in lit.elts)), []).append(name)
    return seen


def test_each_option_vocabulary_is_written_once():
    """Choices live once (featx.options, or the module that owns them); the CLI and the library import them."""
    twice = {choices: where for choices, where in option_choices(MODULES).items() if len(where) > 1}
    assert not twice, twice


def test_a_planted_second_vocabulary_is_found():
    planted = dict(MODULES)
    top, nested, _ = planted["featx.cli.extract"]
    planted["featx.cli.extract"] = (top, nested, ast.parse('p.add_argument("--pool", choices=("avg", "max", "gem"))'))
    assert option_choices(planted)[("avg", "gem", "max")] == ["featx.cli.extract", "featx.options"]


def test_the_model_registry_imports_nothing_of_featx():
    assert MODULES["featx.models.registry"][0] == []


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_no_featx_imports_inside_functions_below_the_cli():
    """Imports inside functions hid cycles; featx modules are imported at the top (only optional or heavy
    third-party packages are imported where they are used). The CLI is the exception: nothing imports it, so its
    function-level imports (a command's library, loaded when that command runs) cannot form a cycle."""
    nested = [f"{name}:{line} imports {target}" for name, (_, inner, _) in MODULES.items() for target, line in inner
              if not _in(name, ("featx.cli",))]
    assert not nested, "\n".join(nested)


def test_the_core_never_imports_the_opt_in_layer():
    users = sorted({name for name, (top, nested, _) in MODULES.items()
                    for target in top + [t for t, _ in nested] if _in(target, ("featx.accel",))})
    assert users and all(_in(name, ACCEL_USERS) for name in users), users


def test_the_command_line_starts_without_torch():
    """`featx --help` builds every sub-command's parser: that must not load the library behind it."""
    code = ("import sys; from featx.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'onnx', 'mmengine', 'timm', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_independent_subsystems_import_nothing_of_each_other():
    wrong = []
    for name, (top, nested, _) in MODULES.items():
        for a, b in INDEPENDENT:
            for mine, theirs in ((a, b), (b, a)):
                if _in(name, (mine,)):
                    wrong += [f"{name} imports {t}" for t in top + [t for t, _ in nested] if _in(t, (theirs,))]
    assert not wrong, "\n".join(wrong)


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (module -> modules it imports), or [] when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_no_import_cycle():
    graph = {name: {t for t in top if t in MODULES and t not in (name, "featx")} for name, (top, _, _) in MODULES.items()
             if name != "featx"}
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) == []
