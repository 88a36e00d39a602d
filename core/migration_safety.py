"""The migration safety checker of seed 000's preventive measures.

For each alembic revision file: `create_table`, `drop_table` and `drop_column` (and their raw-SQL
forms in `op.execute`) need a confirmation comment `# migration-safety: ... confirmed` on the line
or within the three lines above; both `upgrade()` and `downgrade()` must exist; `upgrade()` must
do something. Used by `remediate check-migrations` and the pre-commit hook.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Operations", "Problem", "check_file", "check_path", "column_name", "operations"]

GUARDED_OPS = {"create_table", "drop_table", "drop_column"}
RAW_SQL = re.compile(r"\b(CREATE|DROP)\s+TABLE\b|\bDROP\s+COLUMN\b", re.IGNORECASE)
CONFIRMATION = re.compile(r"#\s*migration-safety:.*\bconfirmed\b", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _confirmed(lines: list[str], lineno: int) -> bool:
    window = lines[max(0, lineno - 4) : lineno]
    return any(CONFIRMATION.search(line) for line in window)


def _is_empty(function: ast.FunctionDef) -> bool:
    body = [
        node
        for node in function.body
        if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
    ]
    return all(isinstance(node, ast.Pass) for node in body)


def check_file(path: Path) -> list[Problem]:
    source = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        return [Problem(path, exc.lineno or 1, f"not valid Python: {exc.msg}")]
    lines = source.splitlines()
    problems: list[Problem] = []
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    for name in ("upgrade", "downgrade"):
        if name not in functions:
            problems.append(Problem(path, 1, f"no {name}() function"))
    if "upgrade" in functions and _is_empty(functions["upgrade"]):
        problems.append(
            Problem(path, functions["upgrade"].lineno, "empty migration: upgrade() does nothing")
        )
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        op = node.func.attr
        if op in GUARDED_OPS and not _confirmed(lines, node.lineno):
            problems.append(
                Problem(
                    path,
                    node.lineno,
                    f"op.{op} needs a confirmation comment"
                    f" '# migration-safety: {op.replace('_', '-')} confirmed (why)'"
                    " (a create_table on an existing table is how seed 000's"
                    " tables were lost; use add_column/alter_column for existing tables)",
                )
            )
        if op == "execute" and node.args and isinstance(node.args[0], ast.Constant):
            text = str(node.args[0].value)
            if RAW_SQL.search(text) and not _confirmed(lines, node.lineno):
                problems.append(
                    Problem(
                        path,
                        node.lineno,
                        "raw CREATE/DROP TABLE or DROP COLUMN needs a '# migration-safety: ..."
                        " confirmed' comment",
                    )
                )
    return problems


def check_path(path: Path) -> list[Problem]:
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return [p for file in files if file.name != "__init__.py" for p in check_file(file)]


@dataclass(frozen=True)
class Operations:
    """The schema operations one revision file declares, read from its `upgrade()` (AST only)."""

    create_tables: dict[str, list[str]]  # table -> source of each sa.Column(...)
    add_columns: list[tuple[str, str]]  # (table, column)
    drop_tables: list[str]
    drop_columns: list[tuple[str, str]]

    def created_columns(self, table: str) -> list[str]:
        return [column_name(source) for source in self.create_tables.get(table, [])]


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def column_name(source: str) -> str:
    """The name in `sa.Column('name', ...)` source text."""
    match = re.search(r"Column\(\s*['\"]([^'\"]+)['\"]", source)
    return match.group(1) if match else source


def operations(path: Path) -> Operations:
    """What `upgrade()` of the revision at `path` creates, adds and drops (literal names only)."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    upgrade = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"), None
    )
    ops = Operations({}, [], [], [])
    if upgrade is None:
        return ops
    for node in ast.walk(upgrade):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        table = _literal(node.args[0]) if node.args else None
        if table is None:
            continue
        op = node.func.attr
        if op == "create_table":
            ops.create_tables[table] = [
                ast.get_source_segment(source, arg) or ""
                for arg in node.args[1:]
                if isinstance(arg, ast.Call)
                and getattr(arg.func, "attr", getattr(arg.func, "id", "")) == "Column"
            ]
        elif op == "add_column" and len(node.args) > 1:
            ops.add_columns.append(
                (table, column_name(ast.get_source_segment(source, node.args[1]) or ""))
            )
        elif op == "drop_table":
            ops.drop_tables.append(table)
        elif op == "drop_column" and len(node.args) > 1 and _literal(node.args[1]):
            ops.drop_columns.append((table, str(_literal(node.args[1]))))
    return ops
