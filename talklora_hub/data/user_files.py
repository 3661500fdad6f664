"""Reading a user's data file into a plain table, with errors a person can act on.

    >>> table = read_table("data.csv", "--train-file")
    >>> table.columns, len(table.rows), table.line_of(0)
    (['sentence', 'topic'], 120, 2)

CSV and TSV are read with Python's csv module (every value a string: no type guessing turns "NA" into
a missing value or "007" into 7), JSON lines and JSON arrays with the json module, Parquet with
pyarrow. Before parsing, the bytes are checked: an empty file and text that is not UTF-8 (with the
byte offset, line and column of the first bad byte) are reported as such, not as a parser's
traceback. A UTF-8 byte-order mark (Excel's "CSV UTF-8") is accepted. Every error names the
argument, the rule, the value received and the fix, in the shape of the configuration errors.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = {".csv": "CSV", ".tsv": "TSV", ".json": "JSON", ".jsonl": "JSON lines", ".parquet": "Parquet"}


def data_error(argument: str, rule: str, value, fix: str) -> ValueError:
    """The one shape of a data error (the same as talklora_hub.modeling's config_error)."""
    return ValueError(f"`{argument}` {rule}, got {value!r}. Fix: {fix}")


@dataclass
class Table:
    """A file's rows as dicts keyed by column name. header_lines: lines before the first row (1 for
    CSV/TSV, 0 otherwise), so line_of(i) is the line a person sees row i on in an editor (None for Parquet)."""

    name: str
    format: str
    columns: list[str]
    rows: list[dict] = field(default_factory=list)
    header_lines: int = 0
    row_lines: list[int] | None = None

    def line_of(self, index: int) -> int | None:
        """The file line row `index` starts on (1-based), None for Parquet."""
        if self.row_lines is not None:
            return self.row_lines[index]
        return None if self.format == "Parquet" else index + 1 + self.header_lines

    def where(self, index: int) -> str:
        """'line 7' (text formats) or 'row 5' (Parquet) of row `index`."""
        line = self.line_of(index)
        return f"line {line}" if line is not None else f"row {index + 1}"


def read_table(path, argument: str) -> Table:
    """The rows of a .csv/.tsv/.json/.jsonl/.parquet file; ValueError naming `argument` when the file is
    missing, of another format, empty, not UTF-8, unparseable, or has a header but no rows."""
    file = Path(path).expanduser()
    if not file.is_file():
        what = "a folder" if file.is_dir() else "missing"
        raise data_error(argument, "must be an existing data file", str(path),
                         f"the path is {what}; check it (relative paths start at {Path.cwd()})"
                         + (", or pass a saved datasets folder as --dataset." if file.is_dir() else "."))
    suffix = file.suffix.lower()
    if suffix not in FORMATS:
        raise data_error(argument, f"must end in one of {sorted(FORMATS)}", file.name,
                         "save the data as CSV (UTF-8), JSON lines or Parquet, or rename a CSV file to .csv.")
    data = file.read_bytes()
    if not data.strip():
        raise data_error(argument, "must not be empty", f"{file.name} ({len(data)} bytes)",
                         "point it at the file that holds your data (a header line, then one row per example).")
    kind = FORMATS[suffix]
    if kind == "Parquet":
        table = _read_parquet(file, argument)
    else:
        text = decode_utf8(data, file.name, argument)
        reader = {"CSV": _read_delimited, "TSV": _read_delimited, "JSON": _read_json, "JSON lines": _read_json_lines}
        table = reader[kind](text, file.name, kind, argument)
    if not table.rows:
        got = f"{file.name} with the columns {table.columns} and no rows" if table.columns else f"{file.name} with no rows"
        raise data_error(argument, "must hold at least one row of data (a header alone is not enough)", got,
                         "add one row per example below the header, or point it at the right file.")
    return table


def decode_utf8(data: bytes, name: str, argument: str) -> str:
    """The bytes as text (a UTF-8 byte-order mark dropped); a ValueError at the first non-UTF-8 byte, giving
    its offset, line and column and how to re-encode the file."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        offset = error.start
        line = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        bad = data[offset:offset + 1].hex()
        raise data_error(argument, "must be UTF-8 text",
                         f"{name}: byte 0x{bad} at byte offset {offset} (line {line}, column {column}) is not UTF-8",
                         f"re-encode the file as UTF-8, e.g. `iconv -f cp1252 -t utf-8 {name} > utf8-{name}` (use the "
                         "file's real encoding: cp1252 and latin-1 are common for spreadsheet exports), or in a "
                         "spreadsheet use 'Save as CSV UTF-8'; then pass the new file.") from None


def _read_delimited(text: str, name: str, kind: str, argument: str) -> Table:
    delimiter = "\t" if kind == "TSV" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, [])
        columns = [c.strip() for c in header]
        rows, lines = [], []
        start = reader.line_num + 1
        for values in reader:
            row_line, start = start, reader.line_num + 1
            if not any(v.strip() for v in values):
                continue  # blank lines (a trailing newline, a spreadsheet's empty rows)
            if len(values) != len(columns):
                raise data_error(argument, f"rows must have as many fields as the header ({len(columns)}: {columns})",
                                 f"{name} line {row_line} with {len(values)} fields",
                                 _field_count_fix(kind, len(values) > len(columns)))
            rows.append(dict(zip(columns, values)))
            lines.append(row_line)
    except csv.Error as error:
        raise data_error(argument, f"must be valid {kind}", f"{name} line {reader.line_num}: {error}",
                         "check the quoting near that line (a text with a line break or a quote must be in double "
                         "quotes, inner quotes doubled).") from None
    if len(set(columns)) != len(columns):
        raise data_error(argument, "must have distinct column names in its header", f"{name} header {columns}",
                         "rename the repeated columns.")
    return Table(name, kind, columns, rows, header_lines=1, row_lines=lines)


def _field_count_fix(kind: str, more: bool) -> str:
    if kind == "CSV" and more:
        return ("put every text that contains a comma in double quotes (\"like, this\"); a spreadsheet's "
                "'Save as CSV' does that for you.")
    return "give every row one value per column (an empty value is written as nothing between two separators)."


def _read_json_lines(text: str, name: str, kind: str, argument: str) -> Table:
    rows, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise data_error(argument, "must hold one JSON object per line", f"{name} line {number}: {error.msg}",
                             'write each example as one line like {"text": "...", "label": "..."}.') from None
        if not isinstance(row, dict):
            raise data_error(argument, "must hold one JSON object per line", f"{name} line {number}: {type(row).__name__}",
                             'write each example as one line like {"text": "...", "label": "..."}.')
        rows.append(row)
        lines.append(number)
    return Table(name, kind, _columns_of(rows), rows, row_lines=lines)


def _read_json(text: str, name: str, kind: str, argument: str) -> Table:
    """A JSON array of objects; a .json file that holds JSON lines instead is read as such."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return _read_json_lines(text, name, "JSON lines", argument)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise data_error(argument, "must hold a JSON array of objects (or one object per line)",
                         f"{name}: a JSON {type(value).__name__}",
                         'write the examples as [{"text": "...", "label": "..."}, ...].')
    return Table(name, kind, _columns_of(value), value)


def _columns_of(rows: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(str(key), None)
    return list(seen)


def _read_parquet(file: Path, argument: str) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except Exception as error:  # pyarrow raises several types for a damaged or non-Parquet file
        raise data_error(argument, "must be a readable Parquet file", f"{file.name}: {error}",
                         "write it again (e.g. pandas DataFrame.to_parquet), or pass a CSV file.") from None
    return Table(file.name, "Parquet", list(table.column_names), table.to_pylist())
