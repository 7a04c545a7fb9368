"""Guards for the package layout DESIGN.md depends on."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_graphql_folder_has_no_init_anywhere() -> None:
    offenders = [p for p in (ROOT / "graphql").rglob("__init__.py")]
    assert offenders == [], f"{offenders} would shadow graphql-core"


def test_import_graphql_is_graphql_core() -> None:
    import graphql

    assert graphql.__file__ is not None and "site-packages" in graphql.__file__
    assert hasattr(graphql, "graphql_sync")
    assert hasattr(graphql, "GraphQLSchema")


def test_cms_packages_map_to_top_level_folders() -> None:
    import cms.app.config
    import cms.storage

    assert Path(cms.app.config.__file__).resolve() == ROOT / "app" / "config.py"
    assert Path(next(iter(cms.storage.__path__))).resolve() == ROOT / "storage"


def test_graphql_names_follow_the_contract() -> None:
    from cms.graphql.names import collection_field, field_name, type_name

    assert type_name("blog_post") == "BlogPost" and field_name("blog_post") == "blogPost"
    assert collection_field("article") == "articleCollection" and type_name("a_b_c2") == "ABC2"


# ---------------------------------------------------------------------------------------------
# import layers (DESIGN.md, "Rules of the house")

PACKAGES = {"app": "cms.app", "workers": "cms.workers", "storage": "cms.storage", "graphql": "cms.graphql"}
# The web layer: the only app modules that may import Litestar (or each other).
WEB = re.compile(
    r"cms\.app\.(?:\w+\.routes|routing|http|server|platform|asgi|openapi|credentials\.guards|delivery\.fast_path|cli(?:\.\w+)?)$"
)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every cms module `name` imports, at the top or inside functions (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module for alias in node.names]
        out |= {t for t in targets if t.startswith("cms.") or t.startswith("litestar")}
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_domain_modules_never_import_litestar_or_the_web_layer() -> None:
    offenders = [
        f"{name} imports {target}"
        for name, targets in _graph().items() if name.startswith("cms.app") and not WEB.match(name)
        for target in targets if target.startswith("litestar") or WEB.match(target)
    ]
    assert offenders == []


def test_storage_imports_nothing_of_the_app_and_the_app_nothing_of_the_workers() -> None:
    graph = _graph()
    offenders = [
        f"{name} imports {target}" for name, targets in graph.items() for target in targets
        if (name.startswith("cms.storage") and target.startswith(("cms.app", "cms.workers")))
        or (name.startswith("cms.app") and not name.startswith("cms.app.cli") and target.startswith("cms.workers"))
    ]
    assert offenders == []


def test_no_import_cycles() -> None:
    graph = {name: {t for t in targets if t in _modules()} for name, targets in _graph().items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """setuptools installs only the packages pyproject.toml names: a new folder must be listed."""
    listed = set(re.findall(r'"(cms(?:\.\w+)+)"', (ROOT / "pyproject.toml").read_text().split("[tool.setuptools]")[1]))
    folders = {name for name, path in _modules().items() if path.name == "__init__.py"}
    assert folders - listed == set()
