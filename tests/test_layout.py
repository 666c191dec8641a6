"""The layout keeps the design readable: application modules never import one another in a
circle, none outgrows 450 lines, and each layer leans only on the layers below it (STYLE.md,
rule 14). Imports are read from the source, those inside functions included, so an import
moved into a function to dodge a cycle still counts."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPLICATION_PACKAGES = ("chatsite", "conversations", "accounts")
MAX_LINES = 450
# What turns text into markup: the model layer stores text and leaves showing it to the views.
RENDERING = ("conversations.rendering", "conversations.templatetags", "markdown_it", "nh3")
RENDERING += ("pygments", "django.template")
ABOVE_THE_MODEL_CLIENT = ("conversations.replies", "conversations.views", "conversations.api")
ABOVE_THE_MODEL_CLIENT += ("conversations.sockets",)
ABOVE_THE_REPLIES = ("conversations.views", "conversations.api", "conversations.sockets")


def application_modules(root: Path = ROOT, packages=APPLICATION_PACKAGES) -> dict[str, Path]:
    """Every module of the packages by its dotted name, migrations left out."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if "migrations" in parts:
                continue
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports(module: str, path: Path) -> list[tuple[str, list[str]]]:
    """Each import of the module, anywhere in it, as (module imported from, names imported):
    `import a.b` is ("a.b", []), `from .b import c` in package a is ("a.b", ["c"])."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".")
                if path.name != "__init__.py":
                    package.pop()
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, node.module] if node.module else package)
            else:
                base = node.module
            found.append((base, [alias.name for alias in node.names]))
    return found


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name the module imports: `from a import b` gives `a` and `a.b`."""
    return {
        name
        for base, names in imports(module, path)
        for name in (base, *(f"{base}.{name}" for name in names))
    }


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Which application modules each one imports: `from a import b` imports the module a.b
    if there is one, else the module a."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        targets = set()
        for base, names in imports(module, path):
            for name in names or [""]:
                targets.add(resolve(f"{base}.{name}" if f"{base}.{name}" in modules else base))
        graph[module] = targets - {None, module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of imports, as the modules along it back to the first; [] if none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return []
        path.append(module)
        for target in sorted(graph[module]):
            if cycle := visit(target):
                return cycle
        path.pop()
        done.add(module)
        return []

    for module in sorted(graph):
        if cycle := visit(module):
            return cycle
    return []


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(f"{package}.") for package in packages)


def imports_from(importers: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    """`importer -> name` for each forbidden name an importer's modules import."""
    return [
        f"{module} -> {name}"
        for module, path in application_modules().items()
        if within(module, importers)
        for name in sorted(imported_names(module, path))
        if within(name, forbidden)
    ]


def test_no_application_modules_import_each_other_in_a_circle():
    cycle = find_cycle(import_graph(application_modules()))

    assert cycle == [], "An import cycle: " + " -> ".join(cycle)


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path: Path):
    package = tmp_path / "shop"
    (package / "orders").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "orders" / "__init__.py").write_text("")
    (package / "orders" / "basket.py").write_text("from shop import pricing\n")
    (package / "pricing.py").write_text("def total():\n    from .orders.basket import x\n")
    (package / "receipts.py").write_text("from shop.orders import basket\n")

    graph = import_graph(application_modules(tmp_path, ("shop",)))

    assert graph["shop.receipts"] == {"shop.orders.basket"}
    assert find_cycle(graph) == ["shop.orders.basket", "shop.pricing", "shop.orders.basket"]


def test_no_application_module_is_over_450_lines():
    lengths = {
        module: len(path.read_text(encoding="utf-8").splitlines())
        for module, path in application_modules().items()
    }

    assert {module: n for module, n in lengths.items() if n > MAX_LINES} == {}


def test_conversations_does_not_import_accounts():
    # accounts may use conversations' model picker; conversations reaches users through
    # get_user_model() and an API token's owner through authenticate().
    assert imports_from(("conversations",), ("accounts",)) == []


def test_models_render_nothing():
    models = ("conversations.models", "accounts.models")

    assert imports_from(models, RENDERING) == []


def test_the_model_client_imports_nothing_from_the_layers_that_use_it():
    assert imports_from(("conversations.llm",), ABOVE_THE_MODEL_CLIENT) == []


def test_the_reply_machinery_imports_no_page_api_or_socket():
    assert imports_from(("conversations.replies",), ABOVE_THE_REPLIES) == []
