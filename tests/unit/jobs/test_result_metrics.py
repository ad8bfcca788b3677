"""Result files: lenient CSV parsing, and merging them with metrics events into one curve."""

from __future__ import annotations

import base64

from service.jobs.metrics import merge_points
from service.providers.openai.results import parse_result_csv

OPENAI_CSV = (
    "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"
    "1,2.1,0.40,,\n"
    "2,1.7,0.52,1.9,0.5\n"
    "3,1.2,0.61,,\n"
)


def test_base64_result_file_as_openai_serves_it():
    columns, rows = parse_result_csv(base64.b64encode(OPENAI_CSV.encode()))
    # The result file's accuracy column is renamed to the events' name for the same figure.
    assert columns == ["step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert rows == [[1, 2.1, 0.4, None, None], [2, 1.7, 0.52, 1.9, 0.5], [3, 1.2, 0.61, None, None]]


def test_plain_csv_with_odd_columns_and_rows():
    text = (
        "Train_Loss,step,full_valid_loss,note\n"
        "0.9,10,0.8,warm\n"
        "nan,11,,x\n"  # not a finite number: dropped to None
        "0.7,,0.6,\n"  # no step: the row is dropped
        "0.5,12\n"  # short row: missing cells are None
        "0.4,13,0.3,z,extra\n"  # long row: extra cells ignored
    )
    columns, rows = parse_result_csv(text.encode())
    assert columns == ["train_loss", "step", "full_valid_loss", "note"]
    assert rows == [[0.9, 10, 0.8, None], [None, 11, None, None], [0.5, 12, None, None], [0.4, 13, 0.3, None]]


def test_files_that_are_not_metrics_csvs():
    assert parse_result_csv(b"") is None
    assert parse_result_csv(b"train_loss,valid_loss\n1,2\n") is None  # no step column
    assert parse_result_csv(b"not base64 and not csv!") is None


def test_result_file_completes_and_wins_over_events():
    events = [
        {"step": 1, "train_loss": 2.0, "train_mean_token_accuracy": 0.4, "total_steps": 3},
        {"step": 3, "train_loss": 1.25, "extra_from_events": 7},
        {"step": "x"},
    ]
    result = {
        "columns": ["step", "train_loss", "train_mean_token_accuracy", "valid_loss"],
        "rows": [[1, 2.1, None, None], [2, 1.7, 0.52, 1.9], [3, 1.2, 0.61, None]],
    }
    points, counts = merge_points(events, [result])
    assert counts == {"events": 2, "result_file": 3}
    assert points == [
        # An empty cell does not erase what an event said.
        {"step": 1, "train_loss": 2.1, "train_mean_token_accuracy": 0.4},
        {"step": 2, "train_loss": 1.7, "train_mean_token_accuracy": 0.52, "valid_loss": 1.9},
        {"step": 3, "train_loss": 1.2, "extra_from_events": 7, "train_mean_token_accuracy": 0.61},
    ]


def test_events_alone_while_running():
    points, counts = merge_points([{"step": 2, "train_loss": 1.0}, {"step": 1, "train_loss": 1.5}], [])
    assert [p["step"] for p in points] == [1, 2] and counts == {"events": 2, "result_file": 0}
