"""Reading the text files of datasets, references and hypotheses, the same way in every tool.

A file is a list of lines split on '\\n' only (a stray '\\r' inside a line is kept for the caller to clean; one
at a line's end, from Windows line ends, is dropped). An empty file is no lines; a file holding only '\\n' is
one empty line. A UTF-8 byte-order mark at the start is dropped. Bytes that are not UTF-8 are an error naming
the file and the line, or, for readers that count malformed rows, reported per line.
"""

from typing import Dict, List, Optional


class DataError(Exception):
    """Bad input data: the message names the file, the problem and the fix."""


BOM = "\ufeff"


def _undecodable(error: UnicodeDecodeError, column: int) -> str:
    byte = error.object[error.start:error.start + 1].hex()
    return f"not UTF-8 (byte 0x{byte} at column {column + 1})"


def read_lines(path: str, undecodable: Optional[Dict[int, str]] = None) -> List[str]:
    """The lines of ``path`` (see the module's docstring).

    A line that is not valid UTF-8 raises :class:`DataError` with its file and line number; with
    ``undecodable`` (a dict) it is recorded there instead, {line number (from 1): what is wrong}, and read as ''.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        if undecodable is None:
            line_start = data.rfind(b"\n", 0, error.start) + 1
            line_no = data.count(b"\n", 0, error.start) + 1
            raise DataError(f"{path}:{line_no}: {_undecodable(error, error.start - line_start)}; convert the file "
                            f"to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
        lines = []
        for line_no, raw in enumerate(data.split(b"\n"), 1):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError as line_error:
                undecodable[line_no] = _undecodable(line_error, line_error.start)
                lines.append("")
    else:
        lines = text.split("\n")
    if lines and lines[0].startswith(BOM):
        lines[0] = lines[0][len(BOM):]
    if not data or data.endswith(b"\n"):  # the last '\n' ends a line; it does not start one
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]
