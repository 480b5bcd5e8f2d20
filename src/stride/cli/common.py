"""What every command shares: the --database-url option, errors, output helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Annotated, Any, NoReturn

import psycopg
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from stride.storage.connection import (
    DatabaseConfigError,
    DatabaseTarget,
    DbConnection,
    connect,
    resolve_database,
)
from stride.storage.migrations import MigrationError

console = Console()
err_console = Console(stderr=True)

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="PostgreSQL URL (default: $DATABASE_URL, else an embedded server in $STRIDE_DATA_DIR "
        "or .stride/pgdata).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error and exit with `code` (2 for usage errors)."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def usage_error(message: str) -> NoReturn:
    fail(message, code=2)


def database(url: str | None, *, quiet: bool = False) -> DatabaseTarget:
    """Resolve the database, announcing an embedded server in one line on stderr."""
    try:
        target = resolve_database(url)
    except DatabaseConfigError as exc:
        fail(str(exc), code=2 if exc.is_usage_error else 1)
    if target.origin == "embedded" and not quiet:
        err_console.print(f"[dim]{target.description}[/dim]", highlight=False)
    return target


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn database and configuration failures into one-line errors, not tracebacks."""
    try:
        yield
    except DatabaseConfigError as exc:
        fail(str(exc))
    except MigrationError as exc:
        fail(str(exc))
    except psycopg.errors.UndefinedTable as exc:
        fail(f"{exc.diag.message_primary} — is the schema migrated? run `stride db migrate`")
    except psycopg.OperationalError as exc:
        fail("database connection failed: " + " ".join(str(exc).split()))


class _OneLineBadParameter(typer.BadParameter):
    """A bad flag value shown as one `error:` line, like every other stride error."""

    def format_message(self) -> str:
        return self.message

    def show(self, file: IO[Any] | None = None) -> None:
        err_console.print(f"[red]error:[/red] {self.message}", highlight=False, soft_wrap=True)


class OneLineUsageErrors(TyperGroup):
    """The root command: a flag value typer rejects (`min=`, not a number) is one line, exit 2.

    Sub-commands parse their flags inside the root's invoke, so this covers them all.
    """

    # Any: the context class lives in typer's private copy of click.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except typer.BadParameter as exc:
            if isinstance(exc, _OneLineBadParameter):
                raise
            raise _OneLineBadParameter(exc.format_message()) from exc


def typer_app(help_text: str) -> typer.Typer:
    """A command group with plain (non-boxed) usage errors, so they stay one line."""
    return typer.Typer(help=help_text, no_args_is_help=True, rich_markup_mode=None)


@contextmanager
def connected(url: str | None) -> Iterator[DbConnection]:
    """What most commands need: resolve the database, connect (autocommit), one-line errors."""
    with database_errors():
        target = database(url)
        with connect(target.url, autocommit=True) as conn:
            yield conn


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def render_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left", min_width=len(title))
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
