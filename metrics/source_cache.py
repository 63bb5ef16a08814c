"""A local copy of each source's validated rows, so an incremental refresh reads only new files.

After a refresh loads a source, its validated, de-duplicated frame is written to a folder the
refresh chooses (next to the store: ``metrics.refresh.cache_dir``) with what it depends on: the files it read (content hashes), the source definition, dimensions,
the columns the metrics need, the geography, the code version and the refresh date. A later
incremental refresh uses it only when all of those still match what the last published run
recorded and the files were only appended to; anything else is a full read of the source. The
cache is a speed-up only: deleting it is always safe.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import polars as pl
from metrics.sources import LoadedSource, PreviousLoad

__all__ = ["save", "load"]


_MAX_PARTS = 12  # appended parts kept before the frame is written again as one


def save(folder: Path, loaded: LoadedSource, depends_on: dict) -> None:
    """Keep ``loaded``'s frame for the next incremental refresh (best effort: a failure to write
    only costs that refresh a full read).

    When ``loaded`` only added rows to the cached frame it started from (``LoadedSource.extends``),
    just the new rows are written, as one more part; otherwise (or after ``_MAX_PARTS`` parts) the
    whole frame. Parts go to new files that the source's ``.json`` then names (replaced atomically),
    so a reader sees either the old set or the new one, never a mix."""
    source_id = loaded.source.id
    meta_path = folder / f"{source_id}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        parts, frame = [], loaded.frame
        earlier = _read_meta(meta_path)
        if (loaded.extends is not None and earlier is not None and earlier.get("rows") == loaded.extends
                and _without_as_of(earlier.get("depends_on", {})) == _without_as_of(depends_on)
                and 0 < len(earlier["parts"]) < _MAX_PARTS and _files(earlier.get("files")) is not None
                and set(_files(earlier["files"])) <= set(_files(loaded.files) or [])):
            parts, frame = list(earlier["parts"]), loaded.frame.slice(loaded.extends)
        frame_path = folder / f"{source_id}-{uuid.uuid4().hex[:12]}.arrow"
        partial = frame_path.with_suffix(".partial")
        # Arrow IPC, uncompressed: the refresh writes this in a thread beside its own work, and on
        # two cores that work waits for it. 3.4M contacts: 0.2 s of CPU to write (Parquet: 0.9-1.1 s,
        # however compressed), 0.13 s to read back (Parquet: 0.1 s); four times the disk (426 MiB).
        frame.write_ipc(partial, compression="uncompressed")
        os.replace(partial, frame_path)
        parts.append(frame_path.name)
        meta = {"depends_on": depends_on, "files": loaded.files, "rows_superseded": loaded.rows_superseded,
                "rows": loaded.frame.height, "parts": parts}
        partial = meta_path.with_suffix(".json.partial")
        partial.write_text(json.dumps(meta, sort_keys=True, default=str))
        os.replace(partial, meta_path)
        for old in [*folder.glob(f"{glob.escape(source_id)}-*.arrow"), *folder.glob(f"{glob.escape(source_id)}-*.parquet")]:
            if old.name not in parts:
                old.unlink(missing_ok=True)
    except OSError:
        pass


def _without_as_of(depends_on: dict) -> dict:
    return {k: v for k, v in depends_on.items() if k != "as_of"}


def _read_meta(meta_path: Path) -> dict | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    if "frame" in meta and "parts" not in meta:  # written before frames were kept in parts
        meta["parts"] = [meta.pop("frame")]
    return meta if isinstance(meta.get("parts"), list) else None


def load(folder: Path, source_id: str, depends_on: dict, recorded: dict | None,
         quarantine: Callable[[], pl.DataFrame | dict[str, int] | None]) -> PreviousLoad | None:
    """The cached load of ``source_id`` if it is what the last published run computed from
    (``recorded``: that run's record of the source) with the same inputs, else None.
    ``quarantine`` gives that load's quarantine records, or their count per rule
    (``PreviousLoad.quarantine``); None means they can't be had, so the cache isn't used."""
    meta_path = folder / f"{source_id}.json"
    if recorded is None or recorded.get("status") != "ok" or not meta_path.exists():
        return None
    meta = _read_meta(meta_path)
    if meta is None:
        return None
    cached = meta.get("depends_on", {})
    same = _without_as_of(depends_on) == _without_as_of(cached)
    if not same or not _as_of_compatible(cached.get("as_of"), depends_on["as_of"], recorded):
        return None
    if _files(meta.get("files")) != _files(recorded.get("files")):
        return None
    earlier_quarantine = quarantine()  # before reading millions of rows that couldn't be used without it
    if earlier_quarantine is None:
        return None
    try:
        frames = [pl.read_ipc(folder / part) if part.endswith(".arrow") else pl.read_parquet(folder / part)
                  for part in meta["parts"]]
        frame = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
    except (OSError, KeyError, TypeError, pl.exceptions.PolarsError):
        return None
    if frame.height != meta.get("rows"):
        return None
    return PreviousLoad(frame=frame, quarantine=earlier_quarantine, files=meta["files"],
                        rows_superseded=int(meta.get("rows_superseded", 0)))


def _as_of_compatible(cached: str | None, now: str, recorded: dict) -> bool:
    """A later refresh date validates old rows the same way unless some were quarantined as future."""
    if cached is None:
        return False
    if cached == now:
        return True
    future = any("future_date" in rule.split("; ") for rule in recorded.get("quarantined_by_rule", {}))
    return dt.date.fromisoformat(now) > dt.date.fromisoformat(cached) and not future


def _files(files: list[dict] | None) -> list[tuple] | None:
    return None if files is None else sorted((f["file"], f["bytes"], f["sha256"]) for f in files)
