"""The house itself: the package's import graph, its layers, the size of its
rooms, and the map of it in docs/layout.md.

Read from the source with ast (nothing is imported), so a function-level
import counts as much as one at the top of a module.
"""

import ast
import os
import re
from collections import defaultdict

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
ENGINE = os.path.join(ROOT, "engine")
CSRC = os.path.join(ROOT, "csrc")

# Who may import whom, by room (the first part of the module's name under
# pyfwd).  Lower rooms never import higher ones: the engine does not know
# the lab, the bench or the CLI exist.
BASE = {"errors", "model", "frames", "_netns", "__init__"}
MAY_IMPORT = {
    "base": BASE,
    "dataplane": BASE | {"dataplane", "_fastpath"},
    "neighbours": BASE | {"neighbours"},
    "control": BASE | {"dataplane", "neighbours", "control"},
    "ops": BASE | {"dataplane", "neighbours", "control", "ops"},
    "lab": BASE | {"dataplane", "neighbours", "control", "ops", "lab"},
    "bench": BASE | {"dataplane", "neighbours", "control", "ops", "lab",
                     "bench"},
    "cli": BASE | {"dataplane", "neighbours", "control", "ops", "lab",
                   "bench", "cli"},
}
MODULE_LINES_MAX = 600
CLASS_LINES_MAX = 400
# A module or class may be larger when its docstring says why, in a
# sentence that starts with this.
WHY_LARGE = "Why one piece:"


def _modules():
    """{'pyfwd.x.y': path} of every module of the package."""
    out = {}
    for dirpath, dirnames, files in os.walk(ENGINE):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))
                       and d not in ("bin", "bpf")]
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), ENGINE)[:-3]
            parts = rel.split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(["pyfwd", *parts])] = os.path.join(dirpath, f)
    return out


MODULES = _modules()


def _package_of(name, path):
    return name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]


def _imports(name, path):
    """The pyfwd modules that `name` imports, anywhere in its body."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(name, path).split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pyfwd.x import y` names the module pyfwd.x.y when there
            # is one, else a name defined in pyfwd.x
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES
                       else mod for a in node.names]
        else:
            continue
        for t in targets:
            if t == "pyfwd" or t.startswith("pyfwd."):
                found.add(t)
    found.discard(name)
    return found


def _graph():
    return {name: _imports(name, path) for name, path in MODULES.items()}


def _room(module):
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def _kind(room):
    return "base" if room in BASE else room


def test_the_package_is_found():
    assert "pyfwd.control.engine" in MODULES
    assert "pyfwd.cli" in MODULES
    assert len(MODULES) > 30


def test_every_import_names_a_module_or_a_name_in_one():
    missing = sorted((m, t) for m, targets in _graph().items()
                     for t in targets
                     if t not in MODULES and t != "pyfwd._fastpath")
    assert not missing, missing


def test_no_import_cycle_among_modules():
    graph = _graph()
    # Tarjan's strongly connected components, iteratively
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = [0]

    def strongconnect(v):
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            for w in children:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    scc = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        scc.append(w)
                        if w == node:
                            break
                    if len(scc) > 1:
                        cycles.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_cycle_detection_sees_a_function_level_cycle(tmp_path):
    """The reader finds an import inside a function body (the kind that
    hid config <-> engine)."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from pyfwd.control import engine\n")
    assert "pyfwd.control.engine" in _imports("pyfwd.model", str(src))


def test_no_room_imports_a_room_above_it():
    bad = []
    for module, targets in _graph().items():
        allowed = MAY_IMPORT[_kind(_room(module))]
        for t in targets:
            if _room(t) not in allowed:
                bad.append(f"{module} -> {t}")
    assert not bad, "imports that run upward:\n" + "\n".join(sorted(bad))


def _docstring_says_why(node):
    doc = ast.get_docstring(node) or ""
    return WHY_LARGE in doc


@pytest.mark.parametrize("module", sorted(MODULES))
def test_rooms_are_of_a_size_to_read(module):
    path = MODULES[module]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    tree = ast.parse(text, path)
    lines = text.count("\n")
    if lines > MODULE_LINES_MAX:
        assert _docstring_says_why(tree), (
            f"{module}: {lines} lines; split it by concern, or say in its "
            f"docstring why it is one piece ({WHY_LARGE} ...)")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            if size > CLASS_LINES_MAX:
                assert _docstring_says_why(node), (
                    f"{module}.{node.name}: {size} lines; split it, or say "
                    f"in its docstring why it is one piece")


def _c_includes():
    """{file: {included csrc file}} for csrc's own C files and headers."""
    out = defaultdict(set)
    for dirpath, _, files in os.walk(CSRC):
        for f in files:
            if not f.endswith((".c", ".h")):
                continue
            path = os.path.join(dirpath, f)
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
                    if m:
                        target = os.path.normpath(os.path.join(dirpath,
                                                               m.group(1)))
                        out[os.path.relpath(path, CSRC)].add(
                            os.path.relpath(target, CSRC))
    return out


def test_c_headers_include_no_cycle():
    graph = _c_includes()
    seen, path = set(), []

    def visit(n):
        if n in path:
            raise AssertionError(f"#include cycle: {path[path.index(n):]}")
        if n in seen:
            return
        path.append(n)
        for m in sorted(graph.get(n, ())):
            visit(m)
        path.pop()
        seen.add(n)

    for n in sorted(graph):
        visit(n)


def _readme_layout():
    """The map of the tree: the first code block of docs/layout.md."""
    with open(os.path.join(ROOT, "docs", "layout.md"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^# Layout\n.*?^```\n(.*?)\n```", text, re.S | re.M)
    assert m, "docs/layout.md has no Layout heading with a code block"
    return m.group(1)


def _layout_paths(block):
    """The paths the Layout block names in its first column:
    `csrc/io/xsk.c, xsk_loop.c` names csrc/io/xsk.c and csrc/io/xsk_loop.c."""
    paths = []
    for line in block.splitlines():
        if not line or line.startswith(" "):
            continue
        first = re.split(r"\s{2,}", line.strip())[0]
        items = [p.strip() for p in first.split(",")]
        base = ""
        for item in items:
            if "/" in item:
                base = item.rsplit("/", 1)[0] + "/" if not \
                    item.endswith("/") else ""
                paths.append(item)
            else:
                paths.append(base + item)
    return paths


def test_readme_layout_names_only_what_exists():
    missing = [p for p in _layout_paths(_readme_layout())
               if not os.path.exists(os.path.join(ROOT, p.rstrip("/")))]
    assert not missing, f"docs/layout.md names what is not there: {missing}"


def test_readme_layout_names_every_package_and_c_folder():
    named = {p.rstrip("/") for p in _layout_paths(_readme_layout())}
    dirs = set()
    for top in ("engine", "csrc"):
        for dirpath, dirnames, files in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = [d for d in dirnames
                           if not d.startswith((".", "_")) and
                           d not in ("bin", "bpf") or
                           (top == "csrc" and d == "bpf")]
            if any(f.endswith((".py", ".c", ".h")) for f in files):
                dirs.add(os.path.relpath(dirpath, ROOT))
    unnamed = sorted(d for d in dirs
                     if not any(n == d or n.startswith(d + "/")
                                for n in named))
    assert not unnamed, f"docs/layout.md leaves out: {unnamed}"


def _c_files():
    for dirpath, _, files in os.walk(CSRC):
        for f in sorted(files):
            if f.endswith((".c", ".h")):
                yield os.path.relpath(os.path.join(dirpath, f), CSRC)


@pytest.mark.parametrize("name", sorted(_c_files()))
def test_c_files_are_of_a_size_to_read(name):
    with open(os.path.join(CSRC, name), encoding="utf-8") as f:
        text = f.read()
    lines = text.count("\n")
    head = text.split("*/", 1)[0]       # the file's opening comment
    assert lines <= MODULE_LINES_MAX or WHY_LARGE in head, (
        f"csrc/{name}: {lines} lines; split it by concern, or say in its "
        f"opening comment why it is one piece ({WHY_LARGE} ...)")


def test_readme_layout_files_named_under_a_folder_exist():
    """`engine/control/  ... engine.py (Engine ...), services.py` names
    files in that folder (or below it): each must be there."""
    missing, folder = [], None
    for line in _readme_layout().splitlines():
        if line and not line.startswith(" "):
            first, _, rest = line.strip().partition("  ")
            folder = first if first.endswith("/") else None
        else:
            rest = line
        if not folder:
            continue
        present = {f for _, _, files in os.walk(os.path.join(ROOT, folder))
                   for f in files}
        for name in re.findall(r"\b[\w]+\.(?:py|c|h)\b", rest):
            if name not in present:
                missing.append(folder + name)
    assert not missing, f"docs/layout.md names what is not there: {missing}"
