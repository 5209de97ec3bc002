"""On-disk layout of a sweep run, with atomic writes and integrity checks.

    run_dir/config.json     the config, the run hash (config + encoder weights + data
                            fingerprints) and its parts; a run dir holds ONE run hash
    run_dir/units/<id>.npz  attributions, curves, AUCs of one finished unit
    run_dir/results.p<I>.jsonl  one JSON row per unit finished by process I (appended, fsynced);
                            each process appends only to its own file, readers take them all
    run_dir/probe/          the linear probe (orbax) and probe.json (its accuracy)

Several processes (hosts) share one run directory: process 0 writes config.json and the
probe, every process writes the npz files of the units it owns and its own results file,
so no file ever has two writers.

Crash safety: a unit's npz is written to a temporary file, fsynced and renamed (atomic on
POSIX), THEN its row is appended. A row names its npz's SHA-256, so a unit counts as
finished only when its row parses, carries this run's config hash and its npz exists with
that digest. A run killed at any instant therefore loses at most the unit in flight: a
half-written row (no trailing newline, or unparsable) and an orphan or damaged npz are
detected and the unit is recomputed.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from typing import TypedDict

import numpy as np

CONFIG_FILE = "config.json"
RESULTS_PATTERN = "results.p{index}.jsonl"
UNITS_DIR = "units"


class RunDirMismatch(ValueError):
    """The run directory holds results of a different config."""


class UnitRow(TypedDict, total=False):
    """One finished unit's line in `results.p<I>.jsonl`: the ONE definition the runner writes
    (`unit_row`) and every reader relies on (`read_rows` drops rows that lack a required field).
    Rows stay plain JSON dicts on disk and in memory."""

    # written by the runner
    seed: int
    class_id: int
    method: str
    targets: list            # the K axis of the unit's arrays
    measures: list           # the M axis
    n_explicands: int
    auc: dict                # {target: {"insertion"|"deletion": {measure: mean AUC}}}
    auc_by_size: dict        # size studies only: {size: the same as auc}
    sizes: list              # size studies only: the sizes, in order
    size_field: str          # size studies only: "corpus_size" or "foil_size"
    seconds: float           # the unit's share of its group's wall time
    attribution_seconds: float
    evaluation_seconds: float
    group_units: int
    devices: int
    # added by RunStore.write_unit
    unit: str
    config_hash: str
    file: str
    sha256: str


_OPTIONAL_ROW_FIELDS = {"auc_by_size", "sizes", "size_field"}
ROW_FIELDS = tuple(UnitRow.__annotations__)
_REQUIRED_ROW_FIELDS = tuple(f for f in ROW_FIELDS if f not in _OPTIONAL_ROW_FIELDS)


def unit_row(**fields) -> UnitRow:
    """A row of `UnitRow`'s fields (the store adds unit, config_hash, file, sha256); an unknown
    or missing field is a programming error, caught here rather than in a report."""
    unknown = sorted(set(fields) - set(ROW_FIELDS))
    missing = [f for f in _REQUIRED_ROW_FIELDS if f not in fields and f not in ("unit", "config_hash", "file", "sha256")]
    if unknown or missing:
        raise ValueError(f"unit row: unknown fields {unknown}, missing fields {missing}")
    return UnitRow(**fields)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the whole new one, never a part."""
    from cocoa_jax import files

    files.atomic_write_bytes(path, data)  # fsynced file and directory; Ctrl-C-safe (cocoa_jax.files)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


class RunStore:
    """Reads and writes one run directory for one run hash.

    Args:
      run_dir: the directory (created).
      config_dict: the config (stored in config.json).
      config_hash: the run hash; a directory holds one.
      identity: what the hash covers (result fields, encoder and data fingerprints), stored so
        a refusal can name the fields that differ.
      process_index: this process's index; it appends to results.p<index>.jsonl only.
      create: write config.json if it is absent (process 0); other processes require it.
    """

    def __init__(self, run_dir: str, config_dict: dict, config_hash: str, identity: dict | None = None, *,
                 process_index: int = 0, create: bool = True):
        self.run_dir = os.path.abspath(run_dir)
        self.config_hash = config_hash
        self.process_index = int(process_index)
        config_path = os.path.join(self.run_dir, CONFIG_FILE)
        if os.path.exists(config_path):
            try:
                with open(config_path) as fh:
                    stored = json.load(fh)
                stored_hash = stored["config_hash"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise RunDirMismatch(f"{config_path} is unreadable ({err}); use a new run directory") from err
            if stored_hash != config_hash:
                from cocoa_jax.sweep.config import diff_fields
                differences = diff_fields(stored.get("identity") or {}, identity or {})
                raise RunDirMismatch(
                    f"run directory {self.run_dir} holds results of another config, encoder or data; "
                    f"differs in: {'; '.join(differences) or 'the run hash'}. Results never mix: "
                    f"use a new run directory (or the old settings)")
        elif create:
            from cocoa_jax import files

            payload = {"config_hash": config_hash, "config": config_dict, "identity": identity,
                       "environment": run_environment()}  # for the report's header; not hashed
            created = files.missing_folders([os.path.join(self.run_dir, UNITS_DIR)])
            try:
                os.makedirs(os.path.join(self.run_dir, UNITS_DIR), exist_ok=True)
                atomic_write_bytes(config_path, json.dumps(payload, indent=2, sort_keys=True).encode())
            except OSError:  # a full disk: no empty run directory left behind either
                files.remove_empty_folders(created)
                raise
        else:
            raise FileNotFoundError(f"{config_path} does not exist (process 0 writes it first)")
        os.makedirs(os.path.join(self.run_dir, UNITS_DIR), exist_ok=True)

    @property
    def results_path(self) -> str:
        """This process's results file."""
        return os.path.join(self.run_dir, RESULTS_PATTERN.format(index=self.process_index))

    def results_paths(self) -> list[str]:
        """Every process's results file, in process order."""
        prefix, suffix = RESULTS_PATTERN.split("{index}")
        found = []
        for name in os.listdir(self.run_dir):
            middle = name[len(prefix):-len(suffix)] if name.startswith(prefix) and name.endswith(suffix) else ""
            if middle.isdigit():
                found.append((int(middle), os.path.join(self.run_dir, name)))
        return [path for _, path in sorted(found)]

    def unit_path(self, unit_id: str) -> str:
        return os.path.join(self.run_dir, UNITS_DIR, f"{unit_id}.npz")

    # -- reading -----------------------------------------------------------------------

    def read_rows(self, *, verify: bool = True, warn: bool = True) -> dict[str, dict]:
        """Valid rows of finished units, unit id -> row (the last valid row per unit wins).

        Skips (with a warning) rows that do not parse, carry another config hash, or
        whose npz is missing or does not match its SHA-256 (with `verify`).
        """
        rows: dict[str, dict] = {}
        problems = []
        lines = []
        for path in self.results_paths():
            with open(path, "rb") as fh:
                lines += [(os.path.basename(path), raw) for raw in fh.read().split(b"\n")]
        for source, raw in lines:
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
                unit_id, file_name, digest = row["unit"], row["file"], row["sha256"]
                missing = [f for f in _REQUIRED_ROW_FIELDS if f not in row]
            except (ValueError, KeyError, TypeError):
                problems.append(f"{source}: partial or malformed row")
                continue
            if missing:
                problems.append(f"{source}: row of unit {unit_id} lacks {', '.join(missing)}")
                continue
            if row.get("config_hash") != self.config_hash:
                problems.append(f"{source}: row of another run ({row.get('config_hash')})")
                continue
            if verify:
                path = os.path.join(self.run_dir, file_name)
                if not os.path.exists(path):
                    problems.append(f"unit {unit_id}: {file_name} missing")
                    continue
                if sha256_file(path) != digest:
                    problems.append(f"unit {unit_id}: {file_name} corrupted (SHA-256 mismatch)")
                    continue
            rows[unit_id] = row
        # A unit whose latest row was bad but an older one is fine is still finished only if
        # the file matches that older digest (checked above); nothing else to do.
        if problems and warn:
            warnings.warn("ignored (will recompute) in " + self.run_dir + ": " + "; ".join(problems),
                          stacklevel=2)
        return rows

    def load_unit(self, row: dict) -> dict[str, np.ndarray]:
        """The arrays of a finished unit, after checking the digest again."""
        path = os.path.join(self.run_dir, row["file"])
        with open(path, "rb") as fh:
            data = fh.read()
        if sha256_bytes(data) != row["sha256"]:
            raise ValueError(f"{path} is corrupted (SHA-256 mismatch with its results row)")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    # -- writing -----------------------------------------------------------------------

    def write_unit(self, unit_id: str, arrays: dict[str, np.ndarray], row: dict) -> dict:
        """Atomically write the unit's npz, then append its row (fsynced). Returns the row."""
        data = npz_bytes(arrays)
        path = self.unit_path(unit_id)
        atomic_write_bytes(path, data)
        row = dict(row, unit=unit_id, config_hash=self.config_hash,
                   file=os.path.relpath(path, self.run_dir), sha256=sha256_bytes(data))
        line = json.dumps(row, sort_keys=True).encode() + b"\n"
        try:
            self._append_row(line)
        except OSError as err:  # a full disk: no half row, no orphan npz; the finished units stay
            _remove_quietly(path)
            raise OSError(err.errno, err.strerror, self.results_path) from None
        return row

    def _append_row(self, line: bytes) -> None:
        """Append `line` (fsynced); on an error the file is cut back to its former length.
        Unbuffered (os.write): no buffer left to flush, and fail, after the cut."""
        fd = os.open(self.results_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                # A run killed mid-append leaves a line without "\n": start a fresh line.
                if start > 0 and os.pread(fd, 1, start - 1) != b"\n":
                    line = b"\n" + line
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, start)  # frees what was written: it needs no space
                except OSError:
                    pass  # a partial row is still detected (no "\n") and its unit recomputed
                raise
        finally:
            os.close(fd)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def run_environment() -> dict:
    """Where and when a run started (recorded once in config.json, read by the report's header):
    UTC date, cocoa-jax / jax / jaxlib versions, platform, device kind and counts, process count."""
    import datetime

    import jax
    import jaxlib

    from cocoa_jax import __version__

    devices = jax.devices()
    return {"created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "cocoa_jax": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "platform": devices[0].platform, "device_kind": devices[0].device_kind,
            "devices": len(devices), "local_devices": jax.local_device_count(),
            "process_count": jax.process_count()}


def open_existing(run_dir: str) -> tuple[dict, RunStore]:
    """(config dict, store) of an existing run directory (for reports)."""
    path = os.path.join(os.path.abspath(run_dir), CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir!r} is not a sweep run directory (no {CONFIG_FILE})")
    try:
        with open(path) as fh:
            stored = json.load(fh)
        stored["config"], stored["config_hash"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is damaged ({type(err).__name__}: {err})") from None
    return stored["config"], RunStore(run_dir, stored["config"], stored["config_hash"], stored.get("identity"),
                                      create=False)
