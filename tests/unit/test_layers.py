"""The map of docs/DESIGN.md, checked on the source: which package may import which, and no
import circles.

- drivers/ (the driver core) imports neither resolver/ nor netdns/.
- resolver/ (the DNS server) imports nothing of netdns/, and of drivers/ only the shared
  vocabulary: the model, the errors and the nft runner (which knows nothing of drivers).
- no product package imports bench/ or tests/; bench/ stands on its own, without tests/.
- no two modules import each other, directly or through others (imports under TYPE_CHECKING
  count: a circle of types is a circle of ideas).

Imports are read with `ast` from the files, so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("netdns", "resolver", "drivers", "bench")
FIRST_PARTY = (*PACKAGES, "tests")
RESOLVER_MAY_USE = frozenset({"drivers.model", "drivers.errors", "drivers.nft"})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imported(path: Path, known: dict[str, Path]) -> Iterator[tuple[int, str]]:
    """(line, module) for every first-party module the file imports; `from a import b` is the
    module a.b when there is one, else a."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                here = (package or module_name(path)).split(".")
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield node.lineno, candidate if candidate in known else base


def first_party(name: str) -> bool:
    return name.split(".")[0] in FIRST_PARTY


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for _, target in imported(path, known):
            if target in known and target != name:
                edges[name].add(target)
    return edges


def broken_rules() -> list[str]:
    known = modules()
    found: list[str] = []
    for name, path in known.items():
        package = name.split(".")[0]
        for line, target in imported(path, known):
            if not first_party(target):
                continue
            top = target.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if top == "tests":
                found.append(f"{where}: nothing outside tests/ may use tests/")
            elif package != "bench" and top == "bench":
                found.append(f"{where}: the product does not use the bench")
            elif package == "drivers" and top in ("resolver", "netdns"):
                found.append(f"{where}: the driver core imports neither the resolver nor netdns")
            elif package == "resolver" and top == "netdns":
                found.append(f"{where}: the DNS server does not import the program")
            elif package == "resolver" and top == "drivers" and target not in RESOLVER_MAY_USE:
                found.append(
                    f"{where}: the DNS server uses only {', '.join(sorted(RESOLVER_MAY_USE))}"
                )
    return found


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_each_package_imports_only_what_the_map_allows() -> None:
    assert sorted(broken_rules()) == []


def test_no_import_circles() -> None:
    assert circles(graph()) == []


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_circles_are_found(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert circles(edges) == expected


def test_a_forbidden_import_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The rules are checked on a copy of the map with one bad file added.
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "drivers" / "model.py").write_text("")
    (tmp_path / "drivers" / "core.py").write_text("")
    (tmp_path / "resolver" / "names.py").write_text(
        "from drivers.model import x\nfrom drivers.core import y\n"
    )
    (tmp_path / "drivers" / "bad.py").write_text("from netdns import daemon\n")
    (tmp_path / "bench" / "lab.py").write_text("import tests.netns.daemon\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert sorted(broken_rules()) == [
        "bench/lab.py:1 imports tests.netns.daemon: nothing outside tests/ may use tests/",
        "drivers/bad.py:1 imports netdns: the driver core imports neither the resolver nor netdns",
        "resolver/names.py:2 imports drivers.core: the DNS server uses only drivers.errors, "
        "drivers.model, drivers.nft",
    ]


def test_the_graph_sees_the_imports_there_are() -> None:
    edges = graph()
    assert "resolver.resolve" in edges["netdns.daemon.composition"]
    assert "drivers.model" in edges["resolver.names"]
    assert "resolver.forward.upstream" in edges["resolver.forward.pool"]
