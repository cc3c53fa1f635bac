"""The run manifest: one JSON line per finished image (written after the image itself), plus a CSV copy.

An image counts as done only when its PNG was renamed into place *and* its manifest line was
flushed, so a run killed at any moment resumes cleanly: a torn last line is ignored and that
image is generated again. Lines are strict JSON: NaN or infinity is refused on write (a UserError
naming the field) and a line holding one is treated as torn on read; a write that fails (disk full)
truncates the file back to its last complete line.
"""
import csv
import json
import math
import os

from ldm.errors import UserError
from ldm.io.atomic import atomic_path

COLUMNS = ("index", "file", "prompt", "negative_prompt", "seed", "sampler", "steps", "scale",
           "guidance_rescale", "width", "height", "checkpoint", "config", "prediction_type")


class Manifest:
    """Append-only JSON-lines record of a run's images (``manifest.jsonl`` in the output folder)."""

    def __init__(self, folder, name="manifest.jsonl"):
        self.folder = folder
        self.path = os.path.join(folder, name)

    def read(self):
        """{index: record} for every complete line whose image file still exists."""
        done = {}
        if not os.path.isfile(self.path):
            return done
        with open(self.path, "rb") as f:
            for raw in f:
                try:
                    rec = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
                except (UnicodeDecodeError, ValueError):
                    continue  # a line torn by a crash (or not strict JSON): that image is simply redone
                if isinstance(rec, dict) and "index" in rec and \
                        os.path.isfile(os.path.join(self.folder, rec.get("file", ""))):
                    done[int(rec["index"])] = rec
        return done

    def reset(self):
        """Start a fresh manifest (a run without --resume)."""
        if os.path.exists(self.path):
            os.remove(self.path)

    def append(self, record):
        """Add one image's record and push it to disk before returning."""
        os.makedirs(self.folder, exist_ok=True)
        try:
            line = json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"
        except ValueError as exc:
            bad = sorted(k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v))
            raise UserError(f"manifest record of image {record.get('index')}: {', '.join(bad) or exc} is not a "
                            "finite number") from exc
        if self._ends_torn():
            line = "\n" + line          # keep a torn last line (crash) from swallowing this record
        size = os.path.getsize(self.path) if os.path.isfile(self.path) else 0
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            if os.path.isfile(self.path) and os.path.getsize(self.path) > size:
                os.truncate(self.path, size)     # disk full mid-line: keep only complete lines
            raise

    def _ends_torn(self):
        if not os.path.isfile(self.path) or os.path.getsize(self.path) == 0:
            return False
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"

    def write_csv(self, csv_name="manifest.csv"):
        """Write the records (ordered by index) as CSV, atomically; returns its path."""
        records = sorted(self.read().values(), key=lambda r: r["index"])
        path = os.path.join(self.folder, csv_name)
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            extra = sorted({k for r in records for k in r} - set(COLUMNS))
            writer = csv.DictWriter(f, fieldnames=list(COLUMNS) + extra, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(records)
        return path


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def check_same_run(record, expected):
    """Refuse to resume into a folder whose image ``index`` was made from other settings: every field of
    ``expected`` (prompt, seed, sampler, size, and a CLI's own inputs such as inpainting's image and mask or
    ControlNet's control images) that the record also holds must be equal (compared as JSON writes them)."""
    for key in expected:
        if key == "index":
            continue
        if key in record and json.dumps(record[key], sort_keys=True) != json.dumps(expected[key], sort_keys=True):
            raise UserError(f"--resume: image {record['index']} in {record.get('file')} was made with "
                            f"{key}={record[key]!r}, this run has {expected[key]!r}; "
                            "use another --output_path or drop --resume")
