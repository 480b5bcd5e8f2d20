"""What every command shares: the --database-url option, errors, output helpers."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, NoReturn, cast
from uuid import UUID

import psycopg
import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
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
        metavar="URL",
        help="PostgreSQL URL (default: $DATABASE_URL, else an embedded server in $STRIDE_DATA_DIR "
        "or .stride/pgdata).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error and exit with `code` (2 for usage errors)."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
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


class WholeHelpGroup(TyperGroup):
    """A command group whose command list shows each command's first sentence whole.

    click cuts it to fit one line and adds "..."; here a long one wraps instead.
    """

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class OneLineUsageErrors(WholeHelpGroup):
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
        uniform_placeholders(self)
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


def uniform_placeholders(command: Any) -> None:
    """One placeholder style in every help text: an UPPERCASE word for each value.

    An option without a metavar of its own is shown with its name in capitals
    (`--source SOURCE`, as argparse does) instead of typer's type names
    (`<str>`, `<int range>`); an argument shows only its metavar (`USER`, not
    `USER <str>`).
    """
    for param in getattr(command, "params", ()):
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            continue
        if param.metavar is None:
            longest = max(getattr(param, "opts", None) or [param.name or "value"], key=len)
            param.metavar = longest.lstrip("-").replace("-", "_").upper()
        if param.param_type_name == "argument":
            # typer appends the type (`<str>`) to an argument's name; the metavar says it all.
            param.display_type_rich = lambda ctx: None
    for sub in getattr(command, "commands", {}).values():
        uniform_placeholders(sub)


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
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
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
    return typer.Typer(
        help=help_text, no_args_is_help=True, rich_markup_mode=None, cls=WholeHelpGroup
    )


@contextmanager
def connected(url: str | None) -> Iterator[DbConnection]:
    """What most commands need: resolve the database, connect (autocommit), one-line errors."""
    with database_errors():
        target = database(url)
        with connect(target.url, autocommit=True) as conn:
            yield conn


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    """JSON for what json cannot encode itself: ISO-8601 times, ids and decimals as text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def iso_time(value: datetime) -> str:
    """A timestamp for people: ISO 8601 in UTC to the second, e.g. 2026-05-01T07:30:00Z."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    text = value.isoformat(timespec="seconds")
    return text.removesuffix("+00:00") + ("Z" if value.tzinfo is not None else "")


def age_text(seconds: float | None) -> str:
    """A duration for people: 4.2s, 3m 12s, 2h 05m, 3d 04h."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{max(seconds, 0.0):.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400:,}d {whole % 86400 // 3600:02d}h"


# --- tables ------------------------------------------------------------------------------------

# Column headers whose integers are identifiers, shown as they are (job 14530,
# not 14,530); every other number gets thousands separators.
IDENTIFIER_COLUMNS = frozenset({"id", "job", "job id", "pid", "controller job"})
# Tables are drawn without rules, like kubectl's: two spaces between columns.
COLUMN_GAP = 2


@dataclass(frozen=True, slots=True)
class Column:
    """A table column; `identifier` columns show integers without separators."""

    name: str
    identifier: bool = False


def format_cell(value: Any, *, identifier: bool = False) -> str:
    """How a value reads in a table: numbers with separators, times in ISO 8601, None blank."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and identifier:
        return str(value)
    if isinstance(value, int | Decimal) or (isinstance(value, float) and math.isfinite(value)):
        return f"{value:,}"
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, UUID):
        return str(value)
    return str(value)


def _columns(columns: Sequence[str | Column]) -> list[Column]:
    return [
        c if isinstance(c, Column) else Column(c, identifier=c.lower() in IDENTIFIER_COLUMNS)
        for c in columns
    ]


def _cells(columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> list[list[str]]:
    return [
        [format_cell(v, identifier=c.identifier) for v, c in zip(row, columns, strict=True)]
        for row in rows
    ]


def _numeric(values: Iterable[Any]) -> bool:
    """Whether a column holds numbers only (right-aligned, so digits line up)."""
    present = [v for v in values if v is not None]
    return bool(present) and all(
        isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in present
    )


def _longest_word(text: str) -> int:
    return max((cell_len(word) for word in text.split()), default=0)


def _longest_line(text: str) -> int:
    return max((cell_len(line) for line in text.splitlines()), default=0)


def column_widths(
    headers: Sequence[str], cells: Sequence[Sequence[str]], width: int
) -> list[int] | None:
    """Content widths that keep every word of every cell whole within `width`, or None.

    Ids, job types, times and numbers are single words, so they are never
    split; text with spaces wraps between words. Columns get their natural
    width when everything fits, else at least their longest word and a fair
    share of what is left. None: even the longest words do not fit side by side.
    """
    columns = range(len(headers))
    natural = [
        max([_longest_line(headers[i]), *(_longest_line(row[i]) for row in cells)]) for i in columns
    ]
    least = [
        max([_longest_word(headers[i]), *(_longest_word(row[i]) for row in cells), 1])
        for i in columns
    ]
    available = width - COLUMN_GAP * (len(headers) - 1)
    if sum(natural) <= available:
        return natural
    if sum(least) > available:
        return None
    widths = list(least)
    spare = available - sum(least)
    # Share the spare width out fairly: the columns that want least are satisfied first.
    wanting = sorted(columns, key=lambda i: natural[i] - least[i])
    for position, i in enumerate(wanting):
        share = spare // (len(wanting) - position)
        extra = min(natural[i] - least[i], share)
        widths[i] += extra
        spare -= extra
    return widths


def table_fits(columns: Sequence[str | Column], rows: Sequence[Sequence[Any]]) -> bool:
    """Whether render_table would draw a grid (not records) on this terminal."""
    cols = _columns(columns)
    cells = _cells(cols, rows)
    return column_widths([c.name for c in cols], cells, console.width) is not None


def render_table(
    title: str, columns: Sequence[str | Column], rows: Sequence[Sequence[Any]]
) -> None:
    """Print rows as a grid, or as one record per row when the grid would have to cut a word.

    Nothing is ever cut off: words (ids, job types, times, numbers) stay whole
    and text wraps between words; when the terminal is too narrow for that,
    each row is printed as `name  value` lines, which the terminal wraps.
    """
    cols = _columns(columns)
    cells = _cells(cols, rows)
    headers = [c.name for c in cols]
    widths = column_widths(headers, cells, console.width)
    if widths is None:
        _render_records(title, headers, cells)
        return
    # Text, not str: cells are data, never rich markup (an error reading "[x]" stays whole).
    # The title on a line of its own: a table's title would wrap to the table's width.
    console.print(title, style="italic", highlight=False, markup=False, soft_wrap=True)
    table = Table(
        box=None,
        pad_edge=False,
        padding=(0, COLUMN_GAP // 2),
        header_style="bold",
    )
    for index, (header, column_width) in enumerate(zip(headers, widths, strict=True)):
        numeric = _numeric(row[index] for row in rows)
        table.add_column(
            Text(header),
            width=column_width,
            overflow="fold",
            justify="right" if numeric else "left",
        )
    for row in cells:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table, highlight=False)


def _render_records(title: str, headers: Sequence[str], cells: Sequence[Sequence[str]]) -> None:
    console.print(title, style="italic", highlight=False, markup=False, soft_wrap=True)
    pad = max(cell_len(h) for h in headers)
    for index, row in enumerate(cells):
        if index:
            console.print()
        for header, value in zip(headers, row, strict=True):
            lines = value.splitlines() or [""]
            say(f"  {header:<{pad}}  {lines[0]}")
            for line in lines[1:]:
                say(f"  {'':<{pad}}  {line}")


def say(line: str) -> None:
    """Print a line of data as it is: no markup, no highlighting, wrapped by the terminal."""
    console.print(line, highlight=False, markup=False, soft_wrap=True)
