"""The package's shape, read from the source: no import circle, no import of another module's private names."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module in tuner/ (a package by its __init__.py)."""
    found = {}
    for path in (ROOT / "tuner").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(path: Path, known: dict[str, Path]) -> list[tuple[ast.stmt, str, str | None]]:
    """(statement, module, name) of every import in a file, at module level or inside a function;
    `module` is the tuner module it reaches (None: another package), `name` what a from-import takes."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node, a.name if a.name in known else None, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                submodule = f"{node.module}.{a.name}"
                out.append((node, submodule if submodule in known else node.module if node.module in known else None,
                            None if submodule in known else a.name))
    return out


def test_no_import_circle_in_the_package():
    """Function-level imports count too: a circle through a lazy import still ties the modules together."""
    known = modules()
    graph = {name: {m for _, m, _ in imported(path, known) if m and m != name} for name, path in known.items()}
    circles, done = [], set()

    def visit(name, trail):
        if name in trail:
            circles.append(trail[trail.index(name):] + [name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, trail + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert circles == []


def test_no_module_imports_another_modules_private_names():
    known = modules()
    found = []
    for path in sorted(p for top in ("tuner", "experiments", "tests") for p in (ROOT / top).rglob("*.py")):
        tree = ast.parse(path.read_text())
        aliases = {}  # local name -> tuner module it is bound to
        for node, module, name in imported(path, known):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if name is not None and name.startswith("_") and not name.startswith("__"):
                found.append(f"{where}: from {module} import {name}")
            for a in node.names:
                target = a.name if isinstance(node, ast.Import) else f"{node.module}.{a.name}"
                if target in known:
                    aliases[a.asname or (a.name if isinstance(node, ast.ImportFrom) else a.name.split(".")[0])] = target
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    assert found == []
