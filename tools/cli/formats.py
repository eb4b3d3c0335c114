"""
`dfd predict`'s output formats: an aligned table for the terminal, JSON and JSON Lines (every window), CSV (one row per
video). Each is a function of the records, so the streamed records rebuild any of them.
"""

import csv
import io
import json


def _time_range(start, end) -> str:
    return "-" if start is None or end is None else f"{start:.2f}-{end:.2f}s"


def format_table(records: list[dict], num_windows: int) -> str:
    header = ["video", "label", "fake_prob", "frames"]
    if num_windows > 1:
        header += ["max_fake_prob", "most_suspicious_window"]
    rows = [header]
    for record in records:
        if "error" in record:
            rows.append([record["path"], "error", record["error"]])  # the reason spans the remaining columns
            continue
        windows = record["windows"]
        frames = sum(len(window["timestamps"]) for window in windows)
        span = _time_range(windows[0]["start"], windows[-1]["end"])
        row = [record["path"], record["label"], f"{record['fake_probability']:.4f}", f"{frames} @ {span}"]
        if num_windows > 1:
            suspicious = record["most_suspicious"]
            row += [f"{record['max_fake_probability']:.4f}", _time_range(suspicious["start"], suspicious["end"])]
        rows.append(row)
    widths = [
        max(len(row[column]) for row in rows if len(row) == len(header) or column < 2) for column in range(len(header))
    ]
    return "".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n" for row in rows)


def format_json(records: list[dict], num_windows: int) -> str:
    return json.dumps(records, indent=2) + "\n"


def format_jsonl(records: list[dict], num_windows: int) -> str:
    """One record per line: the form `dfd predict` streams results in (see tools/cli/results.py)."""
    return "".join(json.dumps(record) + "\n" for record in records)


CSV_COLUMNS = [
    "path",
    "label",
    "fake_probability",
    "max_fake_probability",
    "suspicious_start",
    "suspicious_end",
    "duration",
    "num_windows",
    "timestamps",
    "error",
]


def format_csv(records: list[dict], num_windows: int) -> str:
    """One row per video; `timestamps` lists every sampled frame (all windows, in time order), space-separated."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        if "error" in record:
            writer.writerow(record)
            continue
        times = [time for window in record["windows"] for time in window["timestamps"]]
        writer.writerow(
            {
                "path": record["path"],
                "label": record["label"],
                "fake_probability": record["fake_probability"],
                "max_fake_probability": record["max_fake_probability"],
                "suspicious_start": record["most_suspicious"]["start"],
                "suspicious_end": record["most_suspicious"]["end"],
                "duration": record["duration"],
                "num_windows": len(record["windows"]),
                "timestamps": " ".join("" if time is None else f"{time:g}" for time in times),
            }
        )
    return buffer.getvalue()


FORMATTERS = {"table": format_table, "json": format_json, "jsonl": format_jsonl, "csv": format_csv}
