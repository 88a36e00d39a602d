"""The migration safety checker of seed 000's preventive measures.

For each alembic revision file, in the context of the revisions before it: in `upgrade()`, a
`create_table` of a table an earlier revision created (seed 000's buggy autogenerate), a drop of
a table or a column (unless another column is renamed onto its name in the same upgrade: a
replacement, its data copied), raw SQL that deletes rows, and SQL built at run time need a
confirmation comment `# migration-safety: ... confirmed` on the line or within the three lines
above; both `upgrade()` and `downgrade()` must exist; `upgrade()` must do something.
`downgrade()` is meant to undo, so its drops are not flagged. Silent on the FastAPI full-stack
template's own history. Used by `remediate check-migrations` and the pre-commit hook.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from remediate.domain.sqltext import split_top_level

__all__ = [
    "Operations",
    "Problem",
    "Step",
    "check_file",
    "check_path",
    "column_name",
    "operations",
    "sql_steps",
    "table_key",
]

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


def _assignment(tree: ast.Module, name: str) -> ast.expr | None:
    """The value of the module-level `name = …` (None when the module does not assign it)."""
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets: list[ast.expr] = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return node.value
    return None


def assigned(tree: ast.Module, name: str) -> object:
    """The literal value of a module-level `name = …` (`...` when absent or not a literal)."""
    value = _assignment(tree, name)
    if value is None:
        return ...
    try:
        return ast.literal_eval(value)
    except ValueError:
        return ...


def assigns(tree: ast.Module, name: str) -> bool:
    """Whether the module assigns `name` at its top level (a literal or not)."""
    return _assignment(tree, name) is not None


def existing_before(folder: Path) -> dict[Path, set[str]]:
    """For each revision file under `folder`: the tables the revisions before it leave."""
    parents: dict[str, list[str]] = {}
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        revision, down = assigned(tree, "revision"), assigned(tree, "down_revision")
        if not isinstance(revision, str):
            continue
        files[revision] = path
        downs = (
            [down]
            if isinstance(down, str)
            else list(down)
            if isinstance(down, tuple | list)
            else []
        )
        parents[revision] = [str(d) for d in downs]
    after: dict[str, set[str]] = {}

    def tables_after(revision: str, seen: frozenset[str] = frozenset()) -> set[str]:
        if revision in after:
            return after[revision]
        if revision in seen or revision not in files:
            return set()
        tables = set().union(*(tables_after(p, seen | {revision}) for p in parents[revision]))
        for step in operations(files[revision]).steps:
            if step.table is None:
                continue
            if step.kind == "create_table":
                tables.add(step.table)
            elif step.kind == "drop_table":
                tables.discard(step.table)
            elif step.kind == "rename_table" and step.new_name:
                tables.discard(step.table)
                tables.add(step.new_name)
        after[revision] = tables
        return tables

    return {
        path: set().union(*(tables_after(p) for p in parents[revision]))
        for revision, path in files.items()
    }


def _problem_in(step: Step, existing: set[str], replaced: set[tuple[str, str]]) -> str | None:
    """What seed 000 warns of in one step of upgrade() (None: nothing)."""
    if step.kind == "create_table" and step.table in existing:
        return (
            f"create_table('{step.table}') on a table an earlier revision created needs a"
            " confirmation comment '# migration-safety: create-table confirmed (why)' (a"
            " create_table on an existing table is how seed 000's tables were lost; use"
            " add_column/alter_column for existing tables)"
        )
    if step.kind == "drop_table":
        return (
            f"drop of table {step.table} needs a confirmation comment"
            " '# migration-safety: drop-table confirmed (why)'"
        )
    if step.kind == "drop_column" and (step.table, step.column) not in replaced:
        return (
            f"drop of column {step.table}.{step.column} needs a confirmation comment"
            " '# migration-safety: drop-column confirmed (why)'"
        )
    if step.kind == "delete_rows":
        return (
            f"raw SQL deleting the rows of {step.table} needs a confirmation comment"
            " '# migration-safety: delete confirmed (why)'"
        )
    if step.kind == "unknown" and "SQL" in step.why:
        return (
            f"{step.why}: the checker cannot see what it does; add a"
            " '# migration-safety: sql confirmed (why)' comment once reviewed"
        )
    return None


def check_file(path: Path, existing: set[str] | None = None) -> list[Problem]:
    """Seed 000's checks on one revision file. `existing`: the tables the revisions before it
    leave (read from the file's folder when not given)."""
    source = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        return [Problem(path, exc.lineno or 1, f"not valid Python: {exc.msg}")]
    if existing is None:
        existing = existing_before(path.parent).get(path, set())
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
    steps = operations(path).steps
    # A column dropped and another renamed onto its name in the same upgrade is replaced (the
    # template's UUID swap), its data copied first: not a loss.
    replaced = {(s.table, s.new_name) for s in steps if s.kind == "rename_column" and s.table}
    for step in steps:
        message = _problem_in(step, existing, replaced)  # type: ignore[arg-type]
        if message and not _confirmed(lines, step.line):
            problems.append(Problem(path, step.line, message))
        if step.kind == "create_table" and step.table:
            existing = existing | {step.table}
    return problems


def check_path(path: Path) -> list[Problem]:
    """Every revision file under a folder (each in the context of its history), or one file."""
    if not path.is_dir():
        return check_file(path)
    history = existing_before(path)
    files = sorted(path.rglob("*.py"))
    return [
        p
        for file in files
        if file.name != "__init__.py"
        for p in check_file(file, history.get(file, set()))
    ]


# What a revision's upgrade() does, read from its syntax (alembic's operations and the SQL it
# executes), in order. Used by tables-missing-after-migration to know what each revision leaves in
# the database and whether applying it again can lose anything.

StepKind = Literal[
    "create_table",
    "add_column",
    "drop_table",
    "drop_column",
    "rename_table",
    "rename_column",
    "alter_type",
    "update_rows",
    "delete_rows",
    "safe",
    "unknown",
]

# alembic operations that lose no data (indexes, constraints, comments, inserts, nullability).
SAFE_OPS = {
    "create_index",
    "drop_index",
    "create_foreign_key",
    "create_primary_key",
    "create_unique_constraint",
    "create_check_constraint",
    "create_exclude_constraint",
    "drop_constraint",
    "create_table_comment",
    "drop_table_comment",
    "bulk_insert",
}
# op.* helpers that are not operations.
HELPERS = {
    "f",
    "get_bind",
    "get_context",
    "inline_literal",
    "batch_alter_table",
    "implementation_for",
}


@dataclass(frozen=True)
class Step:
    """One operation of `upgrade()`: its kind, the table (`schema.table` outside public) and
    column it touches, the new name of a rename, and its source line for the approver."""

    kind: StepKind
    table: str | None
    line: int
    source: str
    column: str | None = None
    new_name: str | None = None
    columns: tuple[str, ...] | None = None  # create_table: its columns (None: not known)
    definitions: tuple[str, ...] = ()  # create_table: each sa.Column(...) as written
    why: str = ""  # unknown: what could not be read


def table_key(name: str, schema: str | None = None) -> str:
    """`user`, `public.user` and `"public"."user"` are one table; other schemas keep theirs."""
    parts = [p.strip().strip('"') for p in _split_qualified(name)]
    if schema and len(parts) == 1:
        parts = [schema, parts[0]]
    if len(parts) == 2 and parts[0] == "public":
        parts = parts[1:]
    return ".".join(parts)


def _split_qualified(name: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in name:
        if char == '"':
            quoted = not quoted
        if char == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_QUALIFIED = rf"{_IDENT}(?:\s*\.\s*{_IDENT})?"


def _ident(text: str) -> str:
    text = re.sub(r"\s*\.\s*", ".", text.strip())
    return table_key(
        ".".join(p if p.startswith('"') else p.lower() for p in _split_qualified(text))
    )


_SAFE_SQL = re.compile(
    r"^(CREATE\s+EXTENSION\s+IF\s+NOT\s+EXISTS|CREATE\s+(UNIQUE\s+)?INDEX|CREATE\s+SEQUENCE"
    r"|COMMENT\s+ON|SELECT\b|CREATE\s+TYPE|CREATE\s+POLICY|GRANT\b|SET\b|INSERT\s+INTO)",
    re.I | re.S,
)
_CONSTRAINT_WORDS = {"constraint", "primary", "foreign", "unique", "check", "exclude", "like"}


def _alter_subcommand(table: str, text: str, line: int, source: str) -> Step:
    def step(kind: StepKind, **kw: Any) -> Step:
        return Step(kind, table, line, source, **kw)

    if m := re.match(rf"^RENAME\s+TO\s+({_IDENT})$", text, re.I | re.S):
        return step("rename_table", new_name=_ident(m.group(1)))
    if m := re.match(rf"^RENAME\s+(?:COLUMN\s+)?({_IDENT})\s+TO\s+({_IDENT})$", text, re.I | re.S):
        return step("rename_column", column=_ident(m.group(1)), new_name=_ident(m.group(2)))
    if m := re.match(rf"^DROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?({_IDENT})", text, re.I | re.S):
        if m.group(1).lower() != "constraint":
            return step("drop_column", column=_ident(m.group(1)))
        return step("safe")
    if m := re.match(
        rf"^ADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?({_IDENT})", text, re.I | re.S
    ):
        if m.group(1).lower() in _CONSTRAINT_WORDS:
            return step("safe")
        return step("add_column", column=_ident(m.group(1)))
    if m := re.match(rf"^ALTER\s+(?:COLUMN\s+)?({_IDENT})\s+(SET\s+DATA\s+)?TYPE\b", text, re.I):
        return step("alter_type", column=_ident(m.group(1)))
    if re.match(
        r"^(ALTER\s+(COLUMN\s+)?\S+\s+(SET|DROP)\s+(NOT\s+NULL|DEFAULT)|ENABLE\s+ROW\s+LEVEL"
        r"|FORCE\s+ROW\s+LEVEL|OWNER\s+TO)",
        text,
        re.I,
    ):
        return step("safe")
    return step("unknown", why="an ALTER TABLE it cannot read")


def sql_steps(text: str, line: int, source: str) -> list[Step]:
    """The steps of literal SQL run by `op.execute` (one per statement, several per ALTER)."""
    steps: list[Step] = []
    body = re.sub(r"--[^\n]*", "", text)
    for statement in split_top_level(body, ";"):
        statement = " ".join(statement.split())
        flags = re.I | re.S
        if m := re.match(
            rf"^CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?({_QUALIFIED})\s*\((.*)\)",
            statement,
            flags,
        ):
            columns = tuple(
                _ident(part.split()[0])
                for part in split_top_level(m.group(2))
                if part.split()[0].lower() not in _CONSTRAINT_WORDS
            )
            steps.append(Step("create_table", _ident(m.group(1)), line, source, columns=columns))
        elif m := re.match(
            r"^DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(.+?)(\s+(CASCADE|RESTRICT))?$", statement, flags
        ):
            steps += [
                Step("drop_table", _ident(t), line, source) for t in split_top_level(m.group(1))
            ]
        elif m := re.match(
            r"^TRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?(.+?)(\s+(RESTART|CONTINUE|CASCADE|RESTRICT)\b.*)?$",
            statement,
            flags,
        ):
            steps += [
                Step("delete_rows", _ident(t), line, source) for t in split_top_level(m.group(1))
            ]
        elif m := re.match(rf"^DELETE\s+FROM\s+(?:ONLY\s+)?({_QUALIFIED})", statement, flags):
            steps.append(Step("delete_rows", _ident(m.group(1)), line, source))
        elif m := re.match(rf"^UPDATE\s+(?:ONLY\s+)?({_QUALIFIED})\s+SET\b", statement, flags):
            steps.append(Step("update_rows", _ident(m.group(1)), line, source))
        elif m := re.match(
            rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?({_QUALIFIED})\s+(.+)$",
            statement,
            flags,
        ):
            table = _ident(m.group(1))
            steps += [
                _alter_subcommand(table, sub, line, source) for sub in split_top_level(m.group(2))
            ]
        elif _SAFE_SQL.match(statement):
            steps.append(Step("safe", None, line, source))
        else:
            steps.append(Step("unknown", None, line, source, why="SQL it cannot read"))
    return steps


@dataclass(frozen=True)
class Operations:
    """The schema operations one revision file declares, read from its `upgrade()` (AST only)."""

    steps: list[Step]

    @property
    def create_tables(self) -> dict[str, list[str]]:
        return {
            s.table: list(s.columns or ())
            for s in self.steps
            if s.kind == "create_table" and s.table
        }

    @property
    def unknown(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "unknown"]


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _keyword(node: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def column_name(source: str) -> str:
    """The name in `sa.Column('name', ...)` source text."""
    match = re.search(r"Column\(\s*['\"]([^'\"]+)['\"]", source)
    return match.group(1) if match else source


class _Reader(ast.NodeVisitor):
    """Visits `upgrade()` in source order; `op.*`, `batch_op.*` and `*.execute(...)` calls."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.steps: list[Step] = []
        self.batches: dict[str, tuple[str | None, str | None]] = {}  # alias -> (table, schema)

    def _text(self, node: ast.AST) -> str:
        return " ".join((ast.get_source_segment(self.source, node) or "").split())[:300]

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            call = item.context_expr
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr == "batch_alter_table"
                and isinstance(item.optional_vars, ast.Name)
            ):
                table = (
                    _literal(call.args[0]) if call.args else _literal(_keyword(call, "table_name"))
                )
                schema = _literal(_keyword(call, "schema"))
                self.batches[item.optional_vars.id] = (table, schema)
                if table is None:
                    self._unknown(call, "batch_alter_table on a table it cannot name")
        self.generic_visit(node)

    def _unknown(self, node: ast.AST, why: str) -> None:
        self.steps.append(
            Step("unknown", None, getattr(node, "lineno", 0), self._text(node), why=why)
        )

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if not isinstance(func, ast.Attribute):
            self.generic_visit(node)
            return
        receiver = func.value.id if isinstance(func.value, ast.Name) else None
        name = func.attr
        if name == "execute":
            self._execute(node)
            return
        if receiver in self.batches:
            table, schema = self.batches[receiver]
            if table is not None:
                self._operation(node, name, table_key(table, schema), args=node.args)
            return
        if receiver == "op" and name not in HELPERS:
            schema = _literal(_keyword(node, "schema"))
            first = node.args[0] if node.args else _keyword(node, "table_name")
            table = _literal(first)
            if name in SAFE_OPS:
                self.steps.append(Step("safe", None, node.lineno, self._text(node)))
            elif table is None:
                self._unknown(node, f"op.{name} on a table it cannot name")
            else:
                self._operation(node, name, table_key(table, schema), args=node.args[1:])
            return
        self.generic_visit(node)

    def _operation(self, node: ast.Call, name: str, table: str, *, args: list[ast.expr]) -> None:
        text = self._text(node)

        def add(kind: StepKind, **kw: Any) -> None:
            self.steps.append(Step(kind, table, node.lineno, text, **kw))

        column = _literal(args[0]) if args else _literal(_keyword(node, "column_name"))
        if name == "create_table":
            definitions = [
                ast.get_source_segment(self.source, a) or ""
                for a in args
                if isinstance(a, ast.Call)
                and getattr(a.func, "attr", getattr(a.func, "id", "")) == "Column"
            ]
            known = not any(isinstance(a, ast.Starred) for a in args)
            add(
                "create_table",
                columns=tuple(column_name(d) for d in definitions) if known else None,
                definitions=tuple(definitions),
            )
        elif name == "drop_table":
            add("drop_table")
        elif name == "rename_table":
            new = _literal(args[0]) if args else _literal(_keyword(node, "new_table_name"))
            if new is None:
                self._unknown(node, "rename_table to a name it cannot read")
            else:
                add("rename_table", new_name=table_key(new, _literal(_keyword(node, "schema"))))
        elif name == "add_column":
            source = ast.get_source_segment(self.source, args[0]) if args else None
            added = column_name(source or "") if source and "Column(" in source else None
            if added is None:
                self._unknown(node, "add_column of a column it cannot name")
            else:
                add("add_column", column=added)
        elif name in {"drop_column", "alter_column"} and column is None:
            self._unknown(node, f"{name} of a column it cannot name")
        elif name == "drop_column":
            add("drop_column", column=column)
        elif name == "alter_column":
            renamed = _keyword(node, "new_column_name")
            if renamed is not None:
                if _literal(renamed) is None:
                    self._unknown(node, "a column renamed to a name it cannot read")
                else:
                    add("rename_column", column=column, new_name=_literal(renamed))
            if _keyword(node, "type_") is not None:
                add("alter_type", column=column)
            if renamed is None and _keyword(node, "type_") is None:
                add("safe", column=column)
        elif name in SAFE_OPS:
            add("safe")
        else:
            self._unknown(node, f"op.{name}, which it does not model")

    def _execute(self, node: ast.Call) -> None:
        arg = node.args[0] if node.args else None
        if (
            isinstance(arg, ast.Call)
            and getattr(arg.func, "attr", getattr(arg.func, "id", "")) == "text"
        ):
            arg = arg.args[0] if arg.args else None
        text = _literal(arg)
        if text is None:
            self._unknown(node, "SQL built at run time (not a literal)")
        else:
            self.steps += sql_steps(text, node.lineno, self._text(node))


def operations(path: Path) -> Operations:
    """What `upgrade()` of the revision at `path` does, in order."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    upgrade = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"), None
    )
    if upgrade is None:
        return Operations([])
    reader = _Reader(source)
    for statement in upgrade.body:
        reader.visit(statement)
    return Operations(reader.steps)
