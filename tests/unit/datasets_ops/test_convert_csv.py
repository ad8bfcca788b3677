from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.datasets.convert import ConversionError, CsvColumns, csv_to_chat

QA = CsvColumns(user="question", assistant="answer")


def messages(path: Path) -> list[list[tuple[str, str]]]:
    return [[(m["role"], m["content"]) for m in json.loads(line)["messages"]] for line in path.read_text().splitlines()]


def write(tmp_path: Path, text: str | bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_header_names_bom_and_quoted_newlines(tmp_path: Path) -> None:
    src = write(
        tmp_path,
        b"\xef\xbb\xbfid,question,answer\r\n"
        b'1,"What is 2+2?","4"\r\n'
        b'2,"Multi\nline, with comma","Yes,\n""quoted"" too"\r\n'
        b"3,Plain,Text\r\n",
    )
    result = csv_to_chat(src, tmp_path / "out.jsonl", columns=QA)
    assert result.header == ["id", "question", "answer"]  # the BOM is not part of the first name
    assert result.delimiter == ","
    assert messages(tmp_path / "out.jsonl") == [
        [("user", "What is 2+2?"), ("assistant", "4")],
        [("user", "Multi\nline, with comma"), ("assistant", 'Yes,\n"quoted" too')],
        [("user", "Plain"), ("assistant", "Text")],
    ]
    assert (result.rows_read, result.examples_written, result.problems) == (3, 3, [])


def test_ragged_rows_and_empty_cells_are_reported_with_rows_and_lines(tmp_path: Path) -> None:
    src = write(
        tmp_path,
        "question,answer,notes\n"
        "q1,a1,\n"  # empty notes cell: fine
        '"q2\nspans two lines",a2,n\n'
        "q3,a3\n"  # ragged: 2 fields (row 4 counting the header as row 1; line 5)
        "\n"  # a blank line is a row of its own, skipped and counted
        ",a5,n\n"  # empty user cell
        "q6,  ,n\n"  # whitespace-only assistant cell
        "q7,a7,n,extra\n"  # ragged: 4 fields
        "q8,a8,n\n",
    )
    result = csv_to_chat(src, tmp_path / "out.jsonl", columns=QA)
    assert [(p.row, p.line, p.code, p.column) for p in result.problems] == [
        (4, 5, "ragged_row", None),
        (6, 7, "empty_cell", "question"),
        (7, 8, "empty_cell", "answer"),
        (8, 9, "ragged_row", None),
    ]
    assert result.problems[0].message == "expected 3 fields, got 2"
    assert (result.rows_read, result.examples_written, result.rows_skipped, result.blank_lines) == (7, 3, 4, 1)
    assert [m[0][1] for m in messages(tmp_path / "out.jsonl")] == ["q1", "q2\nspans two lines", "q8"]


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_sniffed_delimiters(tmp_path: Path, delimiter: str) -> None:
    rows = [["question", "answer"], ["a, b", "c"], ["d", "e, f"], ["g", "h"]]
    src = write(tmp_path, "".join(delimiter.join(row) + "\n" for row in rows))
    result = csv_to_chat(src, tmp_path / "out.jsonl", columns=QA)
    assert result.delimiter == delimiter
    assert messages(tmp_path / "out.jsonl")[0] == [("user", "a, b"), ("assistant", "c")]


def test_declared_delimiter_wins_over_sniffing(tmp_path: Path) -> None:
    src = write(tmp_path, "question;answer\nx;y\n")
    with pytest.raises(ConversionError, match="'question' not in the header"):
        csv_to_chat(src, tmp_path / "out.jsonl", columns=QA, delimiter=",")


def test_system_column_and_constant(tmp_path: Path) -> None:
    src = write(tmp_path, "sys,q,a\nBe terse.,hi,hello\n,how,fine\n")
    csv_to_chat(src, tmp_path / "a.jsonl", columns=CsvColumns(system="sys", user="q", assistant="a"))
    assert messages(tmp_path / "a.jsonl") == [
        [("system", "Be terse."), ("user", "hi"), ("assistant", "hello")],
        [("user", "how"), ("assistant", "fine")],  # empty system cell: no system message
    ]
    csv_to_chat(src, tmp_path / "b.jsonl", columns=CsvColumns(system_text="Constant.", user="q", assistant="a"))
    assert {m[0] for m in messages(tmp_path / "b.jsonl")} == {("system", "Constant.")}


def test_positions_with_and_without_header(tmp_path: Path) -> None:
    no_header = write(tmp_path, "hello,world\n1,2\n", "plain.csv")
    by_position = CsvColumns(user=0, assistant=1)
    result = csv_to_chat(no_header, tmp_path / "a.jsonl", columns=by_position, has_header=False)
    assert result.header is None and result.examples_written == 2
    # csv.Sniffer sees a header when a column's type differs between the first row and the rest.
    with_header = write(tmp_path, "name,code\nAda,101\nBob,202\nCy,303\n", "header.csv")
    detected = csv_to_chat(with_header, tmp_path / "b.jsonl", columns=by_position)
    assert detected.header == ["name", "code"] and detected.examples_written == 3
    forced = csv_to_chat(with_header, tmp_path / "c.jsonl", columns=by_position, has_header=False)
    assert forced.examples_written == 4


def test_whole_file_errors(tmp_path: Path) -> None:
    dst = tmp_path / "out.jsonl"
    with pytest.raises(ConversionError, match=r"'answer' not in the header \['question', 'reply'\]"):
        csv_to_chat(write(tmp_path, "question,reply\nx,y\n"), dst, columns=QA)
    with pytest.raises(ConversionError, match="appears 2 times"):
        csv_to_chat(write(tmp_path, "question,answer,answer\nx,y,z\n"), dst, columns=QA)
    with pytest.raises(ConversionError, match="out of range"):
        csv_to_chat(write(tmp_path, "a,b\n"), dst, columns=CsvColumns(user=0, assistant=5), has_header=False)
    with pytest.raises(ConversionError, match="not valid UTF-8"):
        csv_to_chat(write(tmp_path, b"question,answer\n\xff\xfe,x\n"), dst, columns=QA)
    with pytest.raises(ConversionError, match="malformed CSV at line 3"):
        csv_to_chat(write(tmp_path, 'question,answer\nx,y\n"open,z\n'), dst, columns=QA)
    with pytest.raises(ConversionError, match="no rows"):
        csv_to_chat(write(tmp_path, ""), dst, columns=QA)
    with pytest.raises(ConversionError, match="delimiter"):
        csv_to_chat(write(tmp_path, "a"), dst, columns=QA, delimiter="ab")
    assert not dst.exists()


def test_invalid_column_mappings() -> None:
    with pytest.raises(ValueError, match="not both"):
        CsvColumns(user="q", assistant="a", system="s", system_text="t")
    with pytest.raises(ValueError, match="different columns"):
        CsvColumns(user="q", assistant="q")
    with pytest.raises(ValueError, match="0-based"):
        CsvColumns(user=-1, assistant=0)


def test_long_cells(tmp_path: Path) -> None:
    long_text = "word " * 60_000  # 300 KB, above csv's default field limit
    src = write(tmp_path, f'question,answer\nq,"{long_text}"\n')
    result = csv_to_chat(src, tmp_path / "out.jsonl", columns=QA)
    assert result.examples_written == 1
    assert messages(tmp_path / "out.jsonl")[0][1][1] == long_text.strip()
