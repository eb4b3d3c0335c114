"""
Where `dfd predict` puts its results, so that none is lost: every record is appended to a journal next to --output
(`<output>.partial.jsonl`, one JSON line per video, `.partial-<rank>.jsonl` for the other processes of `accelerate
launch`) as soon as it is scored, and the output file is built from the records at the end, atomically. A run that
ends early (crash, Ctrl-C, a killed job) keeps its journal, and `--resume` skips the videos it holds.
"""

import json
import os
import tempfile
from pathlib import Path

from ...scoring_dfd import describe_error
from ..files import json_ready, write_atomically
from .common import CommandError, UsageError
from .inputs import file_identity


JOURNAL_SUFFIX = ".partial"
# Formats whose file holds whole records, so that --resume can read a finished run's results back from it.
RESUMABLE_FORMATS = ("json", "jsonl")


def plot_file_names(videos: list[str]) -> list[str]:
    """
    Each video's PNG: its path relative to the folder all the videos share, plus `.png` (a/x.mp4 -> a/x.mp4.png), so
    that distinct videos never share a plot and a plot's name says which video it shows.
    """
    absolute = [os.path.abspath(video) for video in videos]
    if not absolute:
        return []
    common = os.path.commonpath([os.path.dirname(path) for path in absolute])
    return [os.path.relpath(path, common) + ".png" for path in absolute]


def check_plot_folder(folder: str, option: str):
    """--plot DIR or --explain DIR must be a folder this process can write in: found before any video is scored."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise CommandError(
            f"{option} {folder}: cannot write there ({error.strerror or describe_error(error)})"
        ) from None


def _read_records(path: Path, whole_json: bool) -> list[dict]:
    """The records a journal or a finished output holds; a line cut short by a crash is skipped."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    if whole_json:
        try:
            values = json.loads(text)
        except ValueError:
            return []
        values = values if isinstance(values, list) else []
    else:
        values = []
        for line in text.splitlines():
            try:
                values.append(json.loads(line))
            except ValueError:
                continue
    return [value for value in values if isinstance(value, dict) and isinstance(value.get("path"), str)]


class ResultFiles:
    """--output FILE: the journal this process streams records to, and the final file built from them."""

    def __init__(self, output: str, output_format: str, rank: int = 0):
        self.output = Path(output)
        self.format = output_format
        suffix = f"{JOURNAL_SUFFIX}.jsonl" if rank == 0 else f"{JOURNAL_SUFFIX}-{rank}.jsonl"
        self.journal = self.output.with_name(self.output.name + suffix)
        self.file = None

    def journals(self) -> list[Path]:
        """The journals of every process (of this run or of an interrupted one) that hold anything."""
        if not self.output.parent.is_dir():
            return []
        prefix = self.output.name + JOURNAL_SUFFIX
        return sorted(
            path
            for path in self.output.parent.iterdir()
            if path.name.startswith(prefix) and path.name.endswith(".jsonl") and path.is_file() and path.stat().st_size
        )

    def check(self, inputs: list[str], resume: bool):
        """Refuse, before any video is scored, an output that would overwrite an input or that cannot be written."""
        name = f"--output {self.output}"
        if self.output.is_dir():
            raise CommandError(f"{name}: is a folder; give the name of the file to write")
        input_files = {file_identity(path): path for path in inputs}
        for path in (self.output, *self.journals()):
            identity = file_identity(str(path))
            if identity is not None and identity in input_files:
                raise CommandError(f"{name}: {path} is one of the inputs ({input_files[identity]}); writing the "
                                   "results there would destroy it")  # fmt: skip
        journals = self.journals()
        if journals and not resume:
            raise CommandError(
                f"{name}: {journals[0]} holds the results of an interrupted run: pass --resume to skip the videos in "
                "it, or delete it to start over"
            )
        if resume and not journals and self.output.is_file() and self.format not in RESUMABLE_FORMATS:
            raise UsageError(
                f"--resume: {self.output} is a finished {self.format} file, which does not keep whole results; only "
                ".json and .jsonl outputs (and the .partial.jsonl journal of an interrupted run) can be resumed"
            )

    def read_done(self) -> dict[str, dict]:
        """--resume: path -> record of every video already scored, from the journals and a JSON/JSONL output."""
        records = []
        if self.format in RESUMABLE_FORMATS and self.output.is_file():
            records += _read_records(self.output, whole_json=self.format == "json")
        for journal in self.journals():
            records += _read_records(journal, whole_json=False)
        return {record["path"]: record for record in records if "error" not in record}

    def open(self):
        """Create (or continue) this process's journal: the proof, before any scoring, that --output is writable."""
        ancestor = next(folder for folder in self.output.absolute().parents if folder.exists())
        if not ancestor.is_dir():
            raise CommandError(f"--output {self.output}: cannot write there ({ancestor} is not a folder)")
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.journal, "a+", encoding="utf-8")
            if self.file.tell():  # a journal cut short mid-line by a crash: start on a line of our own
                self.file.seek(self.file.tell() - 1)
                if self.file.read(1) != "\n":
                    self.file.write("\n")
        except OSError as error:
            raise CommandError(
                f"--output {self.output}: cannot write there ({error.strerror or describe_error(error)}: "
                f"{error.filename or self.journal})"
            ) from None

    def append(self, record: dict) -> str | None:
        """Stream one record to the journal; returns why it could not be written (e.g. a full disk), else None."""
        if self.file is None:
            return None
        try:
            self.file.write(json.dumps(json_ready(record)) + "\n")
            self.file.flush()
        except (OSError, ValueError) as error:
            self.file = None  # one message; the results are still written at the end
            return f"{self.journal}: cannot write ({describe_error(error)}); the results are kept until the end"
        return None

    def close(self):
        """Close the journal; one that holds nothing (a run stopped before its first result) is removed."""
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
            self.file = None
        try:
            if self.journal.stat().st_size == 0:
                self.journal.unlink()
        except OSError:
            pass

    def write(self, text: str, complete: bool):
        """
        The output file, atomically; a complete run then removes the journals, an incomplete one keeps them for
        --resume. A failure says where the results still are.
        """
        try:
            write_atomically(self.output, text)
        except OSError as error:
            kept = ", ".join(map(str, self.journals())) or "nowhere"
            raise CommandError(
                f"--output {self.output}: cannot write ({describe_error(error)}); results kept in {kept}"
            )
        if complete:
            for journal in self.journals() + [self.journal]:
                journal.unlink(missing_ok=True)

    def read_all_journals(self) -> dict[str, dict]:
        """Every record the processes streamed so far (path -> record), errors included."""
        records = {}
        for journal in self.journals():
            records.update((record["path"], record) for record in _read_records(journal, whole_json=False))
        return records
