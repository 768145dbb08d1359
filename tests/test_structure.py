"""The shape of the code, checked by reading it: no import cycles, modules and functions of a
readable size, and no private name imported from another module."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edgeclf"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 120


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, level: int, target: str) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _imports(mods: dict[str, Path]):
    """Yield (importing module, imported edgeclf module, the names imported, line) for every
    import statement, at module level or inside functions."""
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("edgeclf"):
                        yield name, a.name, (), node.lineno
            elif isinstance(node, ast.ImportFrom):
                target = node.module or ""
                full = _resolve(name, is_package, node.level, target) if node.level else target
                if not full.startswith("edgeclf"):
                    continue
                names = tuple(a.name for a in node.names)
                # `from . import x` imports the submodule x, if there is one
                subs = [f"{full}.{n}" for n in names if f"{full}.{n}" in mods]
                if subs:
                    for s in subs:
                        yield name, s, (), node.lineno
                else:
                    yield name, full, names, node.lineno


def _cycles(graph: dict[str, set]) -> list[list[str]]:
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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


def test_no_import_cycles():
    mods = _modules()
    graph: dict[str, set] = {m: set() for m in mods}
    for src, dst, _, _ in _imports(mods):
        # A package's __init__ is run by importing any of its modules: an edge to a package
        # only counts when the package's own __init__ is what is imported from.
        if dst in mods and dst != src:
            graph[src].add(dst)
    cycles = _cycles(graph)
    assert not cycles, f"import cycles inside edgeclf (all imports, function-level ones too): {cycles}"


def test_modules_and_functions_are_of_readable_size():
    long_modules, long_functions = [], []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES:
            long_modules.append(f"{name} ({n} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name} ({length} lines)")
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_no_private_name_is_imported_from_another_module():
    mods = _modules()
    found = []
    for src, dst, names, line in _imports(mods):
        for n in names:
            if n.startswith("_") and not n.startswith("__") and dst != src:
                found.append(f"{src}:{line} imports {n} from {dst}")
    assert not found, "private names used across modules (make them public or move them): " + "; ".join(found)
