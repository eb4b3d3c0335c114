"""
`dfd predict`'s output formats, each a projection of results_dfd.py's record: JSON and JSON Lines (the records
themselves, every window with its frames and times), CSV (one row per video) and an aligned table for the terminal.
All carry per video the verdict (`label`), the `fake_score` the decision rule compared with the `threshold`, the
flagged windows' time ranges, the mean fake probability and the number of windows. Each is a function of the records,
so the streamed records rebuild any of them.
"""

import csv
import io
import json


def _time_range(start, end) -> str:
    return "-" if start is None or end is None else f"{start:.2f}-{end:.2f}s"


def flagged_ranges(record: dict) -> str:
    """The flagged windows' time ranges, space-separated ("-" for none); a window without frame times by number."""
    ranges = [
        f"#{window['window']}" if window["start"] is None else _time_range(window["start"], window["end"])
        for window in record["flagged_windows"]
    ]
    return " ".join(ranges) or "-"


def format_table(records: list[dict]) -> str:
    header = ["video", "label", "fake_score", "threshold", "flagged_windows", "mean", "windows"]
    rows = [header]
    for record in records:
        if "error" in record:
            rows.append([record["path"], "error", record["error"]])  # the reason spans the remaining columns
            continue
        rows.append(
            [
                record["path"],
                record["label"],
                f"{record['fake_score']:.4f}",
                f"{record['threshold']:.4f}",
                flagged_ranges(record),
                f"{record['mean_fake_probability']:.4f}",
                str(len(record["windows"])),
            ]
        )
    widths = [
        max(len(row[column]) for row in rows if len(row) == len(header) or column < 2) for column in range(len(header))
    ]
    return "".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n" for row in rows)


def format_json(records: list[dict]) -> str:
    return json.dumps(records, indent=2) + "\n"


def format_jsonl(records: list[dict]) -> str:
    """One record per line: the form `dfd predict` streams results in (see tools/cli/results.py)."""
    return "".join(json.dumps(record) + "\n" for record in records)


CSV_COLUMNS = [
    "path",
    "label",
    "score",
    "fake_score",
    "threshold",
    "rule",
    "flagged_windows",
    "mean_fake_probability",
    "max_fake_probability",
    "num_windows",
    "duration",
    "error",
]


def _rounded(value, digits: int):
    return "" if value is None else round(value, digits)


def format_csv(records: list[dict]) -> str:
    """One row per video, probabilities to 4 decimals and seconds to 3; the windows' details are in the JSON."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        if "error" in record:
            writer.writerow(record)
            continue
        writer.writerow(
            {
                "path": record["path"],
                "label": record["label"],
                "score": _rounded(record["score"], 4),
                "fake_score": _rounded(record["fake_score"], 4),
                "threshold": _rounded(record["threshold"], 4),
                "rule": record["rule"],
                "flagged_windows": flagged_ranges(record),
                "mean_fake_probability": _rounded(record["mean_fake_probability"], 4),
                "max_fake_probability": _rounded(record["max_fake_probability"], 4),
                "num_windows": len(record["windows"]),
                "duration": _rounded(record["duration"], 3),
            }
        )
    return buffer.getvalue()


FORMATTERS = {"table": format_table, "json": format_json, "jsonl": format_jsonl, "csv": format_csv}
