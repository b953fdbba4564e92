"""Packages depend one way: no package imports a package that imports it back, directly or through
others, counting imports inside functions (CONVENTIONS.md, "Layout")."""

import ast
from pathlib import Path

import updown_vqa

SOURCE = Path(updown_vqa.__file__).parent


def imported_modules(path: Path, module: str) -> set[str]:
    """Every module `path` (module `module`) imports, anywhere in it, relative imports resolved."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found |= {name} | {f"{name}.{alias.name}" for alias in node.names}
    return found


def package_graph(source: Path) -> dict[str, dict[str, str]]:
    """{package: {package it imports: one module that does}} for the subpackages of `source`; modules at
    the top (the commands) import packages but belong to none."""
    top = source.name
    packages = {p.name for p in source.iterdir() if (p / "__init__.py").is_file()}
    graph: dict[str, dict[str, str]] = {name: {} for name in packages}
    for path in sorted(source.rglob("*.py")):
        parts = path.relative_to(source.parent).with_suffix("").parts
        if len(parts) < 3:
            continue
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for name in imported_modules(path, module):
            target = name.split(".")
            if len(target) > 1 and target[0] == top and target[1] in packages and target[1] != parts[1]:
                graph[parts[1]].setdefault(target[1], module)
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str]:
    """One cycle of packages ([a, b, ..., a]), or [] when the dependencies run one way."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for child in sorted(graph.get(node, {})):
            if state.get(child) == "open":
                return path[path.index(child):] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        state[node] = "done"
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "lib"


def test_the_packages_depend_one_way():
    graph = package_graph(SOURCE)
    assert {"core", "features", "detection", "extraction", "vqa", "captioning"} <= set(graph)
    cycle = find_cycle(graph)
    via = [f"{a} -> {b} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    assert not cycle, "package cycle: " + ", ".join(via)


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path):
    lib = write_tree(tmp_path, {
        "lib/__init__.py": "", "lib/command.py": "from lib.b.y import g\n",
        "lib/a/__init__.py": "", "lib/a/x.py": "def f():\n    from lib.b import y\n",
        "lib/b/__init__.py": "", "lib/b/y.py": "def g():\n    pass\n",
        "lib/c/__init__.py": "", "lib/c/z.py": "from ..a.x import f\n",
    })
    assert find_cycle(package_graph(lib)) == []  # a -> b and c -> a; the top-level command counts for none
    (lib / "b" / "y.py").write_text("def g():\n    from ..c import z\n")
    graph = package_graph(lib)
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert graph["b"]["c"] == "lib.b.y" and graph["c"]["a"] == "lib.c.z"
