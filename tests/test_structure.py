"""The package's shape: no import cycles, no module over ~400 lines, public names where the README says."""
import ast
import importlib
import types
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hwprune"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the hwprune modules it imports: at module level, inside functions (a lazy import is still a
    dependency) and under ``if TYPE_CHECKING:`` (a type checker follows it) alike."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    where = ".".join(base + ([node.module] if node.module else []))
                else:
                    where = node.module or ""
                # "from x import y" depends on x.y when y is a module, else on x
                targets = [f"{where}.{a.name}" if f"{where}.{a.name}" in modules else where for a in node.names]
            for t in targets:
                while t and t not in modules and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in modules and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_relative_lazy_imports():
    g = import_graph()
    assert "hwprune.core.tracing" in g["hwprune.core.space"]  # from .tracing import ...
    assert "hwprune.models" in g["hwprune.core.space"]  # a lazy import inside from_json


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_module_over_400_lines():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_stages_depend_one_way():
    """Lower stages never import higher ones: core < profilers < latency < supernet < search < deploy < runs < cli."""
    order = ["errors", "version", "progress", "files", "models", "core", "data", "training", "profilers", "latency", "supernet", "search",
             "deploy", "runs", "cli"]
    rank = {name: i for i, name in enumerate(order)}
    bad = []
    for mod, deps in import_graph().items():
        top = mod.split(".")[1] if mod.count(".") else None
        for dep in deps:
            other = dep.split(".")[1] if dep.count(".") else None
            if top in rank and other in rank and rank[other] > rank[top]:
                bad.append(f"{mod} -> {dep}")
    assert bad == []


def test_search_is_a_module_and_still_runs_a_search():
    import hwprune as hp
    import hwprune.search

    assert isinstance(hwprune.search, types.ModuleType) and hp.search is hwprune.search
    config = importlib.import_module("hwprune.search.config")
    assert callable(hp.search) and hp.search.SearchConfig is config.SearchConfig


@pytest.mark.parametrize("name", __import__("hwprune").__all__)
def test_every_public_name_loads(name):
    import hwprune as hp

    assert getattr(hp, name) is not None


def test_help_of_every_verb_loads_no_torch():
    """``hwprune --help`` and each verb's ``--help`` (and argument errors) answer without loading torch (~2 s)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from hwprune.cli import main\n"
            "verbs = sorted(main.commands)\n"
            "for args in [['--help']] + [[v, '--help'] for v in verbs]:\n"
            "    assert main.main(args, standalone_mode=False) == 0, args\n"
            "print(len(verbs), sorted(m for m in ('torch', 'onnxruntime', 'numpy') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    count, loaded = out.strip().splitlines()[-1].split(" ", 1)
    assert int(count) >= 8 and loaded == "[]"
