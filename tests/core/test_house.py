"""Issue 16's house rules, as tests: no import cycle among first-party modules (imports inside functions
included), no module over 400 lines, no module docstring over 20 lines."""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("uqa_ray", "analysis", "experiments", "bench")


def sources() -> list[Path]:
    """The first-party .py files git would track: not what runs leave in ignored folders (bench/work holds
    DeepSpeed's own zero_to_fp32.py copies in checkpoints), everywhere when git is not at hand."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.py"],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return sorted(p for pkg in FIRST_PARTY for p in (ROOT / pkg).rglob("*.py"))
    return sorted(ROOT / f for f in listed if f.split("/")[0] in FIRST_PARTY and (ROOT / f).exists())


def modules() -> dict[str, Path]:
    out = {}
    for path in sources():
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """First-party modules that `name` imports anywhere in its file (a `from m import x` counts m, and
    m.x when x is a module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    out = set()
    for target in found:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_first_party_modules():
    known = modules()
    assert "uqa_ray.pretrain.loop" in known and "analysis.tables" in known
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert "uqa_ray.pretrain.objective" in graph["uqa_ray.pretrain.loop"]
    assert cycles(graph) == []


def test_modules_are_short():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}


def test_module_docstrings_are_short():
    long = {}
    for name, path in modules().items():
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if len(doc.splitlines()) > 20:
            long[name] = len(doc.splitlines())
    assert long == {}
