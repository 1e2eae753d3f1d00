"""Issue #23: the house shows its architecture, and its arrows hold (DESIGN.md "Data flow").

Read from the source itself (every `import`, those inside functions too; `if TYPE_CHECKING:`
blocks aside, which never run): a wing that imports what it must not fails here, with the file,
the line and the rule it breaks.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kmsaudit"

# What every module may stand on.
FLOOR = ("kmsaudit.model", "kmsaudit.evidence", "kmsaudit.errors", "kmsaudit.gcpause", "kmsaudit.files")
# Imports that do I/O, run an event loop, log or talk to a network or database: never in the pure core.
IO = (
    "asyncio",
    "aiohttp",
    "aiobotocore",
    "botocore",
    "boto3",
    "http",
    "logging",
    "multiprocessing",
    "os",
    "pathlib",
    "shutil",
    "socket",
    "sqlite3",
    "sqlite_utils",
    "structlog",
    "subprocess",
    "tempfile",
    "threading",
    "urllib.request",
)
AWS_SDK = ("aiobotocore", "botocore", "boto3")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, dotted (`from kmsaudit import __version__` -> "kmsaudit")
    where: str  # path:line


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports() -> list[Import]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_lines(tree)
        module = _module_name(path)
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                found += [Import(module, alias.name, where) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "kmsaudit":  # from kmsaudit import x: a submodule, or a name of kmsaudit
                    for alias in node.names:
                        sub = PACKAGE / alias.name
                        is_sub = sub.is_dir() or sub.with_suffix(".py").exists()
                        found.append(Import(module, f"kmsaudit.{alias.name}" if is_sub else "kmsaudit", where))
                else:
                    found.append(Import(module, node.module, where))
    return found


IMPORTS = _imports()


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _broken(
    modules: tuple[str, ...], allowed: tuple[str, ...] | None = None, forbidden: tuple[str, ...] = ()
) -> list[str]:
    """Imports of `modules` outside `allowed` (kmsaudit's own modules), or inside `forbidden`."""
    bad = []
    for imp in IMPORTS:
        if not _within(imp.module, modules):
            continue
        if (forbidden and _within(imp.target, forbidden)) or (
            allowed is not None
            and imp.target.startswith("kmsaudit")
            and imp.target != "kmsaudit"
            and not _within(imp.target, allowed)
        ):
            bad.append(f"{imp.where}: {imp.module} imports {imp.target}")
    return bad


# (wing, the kmsaudit modules it may import; None: any; the imports it may never make)
RULES: list[tuple[tuple[str, ...], tuple[str, ...] | None, tuple[str, ...]]] = [
    # The floor stands on nothing of kmsaudit's but itself.
    (("kmsaudit.model", "kmsaudit.errors", "kmsaudit.logging", "kmsaudit.gcpause"), (), ()),
    (("kmsaudit.files",), ("kmsaudit.errors",), ()),  # where a user's file is written (issue #25)
    (("kmsaudit.drift",), FLOOR, IO),
    (("kmsaudit.metrics",), FLOOR, ()),
    # The pure core (DESIGN.md): stdlib, model and errors; no I/O, no asyncio, no logging.
    (("kmsaudit.evaluator",), (*FLOOR, "kmsaudit.evaluator"), IO),
    (("kmsaudit.acceptance.matcher",), (*FLOOR, "kmsaudit.evaluator"), IO),
    (("kmsaudit.config",), (*FLOOR, "kmsaudit.config", "kmsaudit.evaluator.actions"), ()),
    (("kmsaudit.acceptance.entries",), (*FLOOR, "kmsaudit.config"), ()),
    # collect never imports the store (DESIGN.md), nor what runs it or shows its results.
    (
        ("kmsaudit.collect",),
        (*FLOOR, "kmsaudit.collect", "kmsaudit.config", "kmsaudit.evaluator", "kmsaudit.logging"),
        (),
    ),
    (("kmsaudit.store",), (*FLOOR, "kmsaudit.store", "kmsaudit.drift", "kmsaudit.evaluator"), ()),
    # Views never drive the run: no AWS, no scan, no delivery.
    (
        ("kmsaudit.formats",),
        (*FLOOR, "kmsaudit.formats", "kmsaudit.evaluator", "kmsaudit.config", "kmsaudit.store"),
        AWS_SDK,
    ),
    (
        ("kmsaudit.delivery",),
        (*FLOOR, "kmsaudit.delivery", "kmsaudit.store", "kmsaudit.config", "kmsaudit.collect", "kmsaudit.formats"),
        (),
    ),
    # Only run/ drives the others; nothing but the CLI and the demo drives run/.
    (("kmsaudit.run",), None, ("kmsaudit.cli", "kmsaudit.demo")),
    (("kmsaudit.demo",), None, ("kmsaudit.cli",)),
]


@pytest.mark.parametrize(("modules", "allowed", "forbidden"), RULES, ids=lambda v: ",".join(v) if v else "-")
def test_each_wing_imports_only_what_it_may(
    modules: tuple[str, ...], allowed: tuple[str, ...] | None, forbidden: tuple[str, ...]
) -> None:
    assert _broken(modules, allowed, forbidden) == []


def test_nothing_but_the_cli_and_the_entry_point_imports_the_cli() -> None:
    bad = [
        f"{i.where}: {i.module}"
        for i in IMPORTS
        if _within(i.target, ("kmsaudit.cli",)) and not _within(i.module, ("kmsaudit.cli", "kmsaudit.__main__"))
    ]
    assert bad == []


def test_the_aws_sdk_is_imported_only_in_collect() -> None:
    """The demo's emulator (moto and its boto3 client) and the list of regions botocore knows
    (config's region check) are the two exceptions the issue names."""
    exceptions = ("kmsaudit.collect", "kmsaudit.demo.emulator", "kmsaudit.config.settings")
    bad = [
        f"{i.where}: {i.target}" for i in IMPORTS if _within(i.target, AWS_SDK) and not _within(i.module, exceptions)
    ]
    assert bad == []


def test_the_layout_is_in_wings() -> None:
    """At most 8 modules directly in kmsaudit/ (besides __init__ and __main__), at least 5
    packages, each saying in its docstring what it is for."""
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    packages = sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert len(loose) <= 8, loose
    assert len(packages) >= 5
    for package in packages:
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc and len(doc) > 60, f"{package.name}/__init__.py says nothing of what the wing is for"


def test_no_module_is_over_400_lines() -> None:
    """DESIGN.md: modules of 60–300 lines; split before 400."""
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
