"""What every command shares: the --database-url option, errors, output helpers."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn, cast

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
    except psycopg.Error as exc:
        # Permissions, read-only standby, constraint or limit errors: still one line.
        state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
        fail("database error: " + " ".join(str(exc).split()) + state)


# typer re-exports click's BadParameter but not its bases: UsageError (also raised
# for unknown options, missing arguments, unknown commands) and ClickException.
UsageError = cast(type[Exception], typer.BadParameter.__mro__[1])
ClickException = cast(type[Exception], UsageError.__mro__[1])


class OneLineUsageErrors(TyperGroup):
    """The root `stride` command: usage errors print one line, like every other error.

    click prints a usage block, a hint and the error (three lines and a blank);
    here it is `error: <what> (see '<command> --help')`, exit 2. Arguments that
    are not valid UTF-8 (a terminal passes such bytes as surrogate escapes) are
    refused here, once for every command, before any of them could print or
    store them.
    """

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        arguments = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(arguments, prog_name, complete_var, False, **extra)
        problem = undecodable_argument(arguments)
        if problem:
            _exit_with_error(problem, 2)
        try:
            code = super().main(arguments, prog_name, complete_var, False, **extra)
        except UsageError as exc:
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError":  # `stride events` shows the help
                cast(Any, exc).show()
                sys.exit(cast(Any, exc).exit_code)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            _exit_with_error(cast(Any, exc).format_message().rstrip(".") + hint, 2)
        except ClickException as exc:
            _exit_with_error(cast(Any, exc).format_message(), cast(Any, exc).exit_code)
        except typer.Abort:
            _exit_with_error("aborted", 1)
        sys.exit(code if isinstance(code, int) else 0)


def undecodable_argument(arguments: Sequence[str]) -> str | None:
    """Why an argument is refused: bytes that are not UTF-8, as surrogate escapes in argv."""
    for position, argument in enumerate(arguments):
        try:
            argument.encode("utf-8")
        except UnicodeEncodeError:
            raw = os.fsencode(argument)
            shown = repr(raw[:60])[1:] + ("…" if len(raw) > 60 else "")
            after = f" (after {arguments[position - 1]})" if position else ""
            if argument.startswith("--") and "=" in argument:
                after = f" (in {argument.split('=', 1)[0]})"
            return f"argument {shown}{after} is not valid UTF-8: stride takes text in UTF-8"
    return None


def _exit_with_error(message: str, code: int) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def finite_at_least(minimum: float, unit: str) -> Any:
    """A typer option callback: a finite number >= `minimum` (no inf or nan), else exit 2."""

    def check(value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value >= minimum):
            raise typer.BadParameter(f"{value} is not a finite number of {unit} >= {minimum:g}")
        return value

    return check


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
