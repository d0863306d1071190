"""``brainsynth fetch adhd200``: the public ADHD-200 T1 scans and diagnoses, resumably.

The source is the FCP-INDI open bucket (``s3://fcp-indi/data/Projects/ADHD200/RawDataBIDS/<SITE>/``),
read with unsigned S3 requests, so no AWS account or credentials are needed. Only each site's
``participants.tsv`` and its T1-weighted images (``sub-*/ses-*/anat/*_T1w.nii.gz``, with or without
``_run-<k>``) are downloaded; functional runs, sidecars and phenotypic CSVs are skipped.

Result (one BIDS folder per site, so ``brainsynth prepare OUT/<SITE>`` reads it directly)::

    OUT/summary.json                                   subjects per site and per diagnosis
    OUT/<SITE>/participants.tsv
    OUT/<SITE>/sub-XXXXXXX/ses-<n>/anat/sub-XXXXXXX_ses-<n>[_run-<k>]_T1w.nii.gz

Reliability
-----------
* Each file is written to ``<file>.part`` and renamed only once its size equals the listed size
  and, for single-part uploads, its MD5 equals the ETag. A multipart upload's ETag (it contains
  ``-``) is not the MD5 of the content and depends on the uploader's part size, so such files are
  checked by size only.
* Rerunning the same command resumes: complete files that still match are skipped, a ``.part``
  file is continued with a ranged GET, and a ``.part`` or complete file that turns out not to match
  the bucket is downloaded again from the start.
* Transient failures (HTTP 5xx, throttling, connection errors, timeouts, truncated bodies) are
  retried ``retries`` times with exponential backoff (``backoff * 2**attempt`` seconds).

``max_subjects`` keeps, per site, the first N subject ids in sorted order among the subjects that
have at least one T1 image (all of their sessions and runs are kept).
"""

from __future__ import annotations

import difflib
import errno
import hashlib
import http.client
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import boto3
import botocore
import pandas as pd
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import ClientError
from tqdm import tqdm

from brainsynth import LABELS
from brainsynth.data.labels import (ID_COLUMNS, LABEL_COLUMNS, find_column, list_items, parse_label,
                                    subject_key)
from brainsynth.errors import ConfigError, FetchError, InputError
from brainsynth.fsio import atomic_write_json

log = logging.getLogger("brainsynth.fetch")

BUCKET = "fcp-indi"
ROOT_PREFIX = "data/Projects/ADHD200/RawDataBIDS/"
REGION = "us-east-1"
SITES = ("Brown", "KKI", "NYU", "NeuroIMAGE", "OHSU", "Peking_1", "Peking_2", "Peking_3", "Pittsburgh", "WashU")
"""The ADHD-200 site folders of the public BIDS copy."""

PARTICIPANTS_FILE = "participants.tsv"
SUMMARY_FILE = "summary.json"
PART_SUFFIX = ".part"
UNLABELLED = "unlabelled"
SUMMARY_LABELS = (*LABELS, UNLABELLED)

# Relative to a site prefix. `[^/]` keeps every component inside its folder, so a key can never
# name a path outside OUT/<SITE>.
_T1_KEY = re.compile(r"(?P<subject>sub-[^/]+)/ses-[^/]+/anat/[^/]+_T1w\.nii\.gz")
_CHUNK_BYTES = 1 << 20
_MD5_HEX = re.compile(r"[0-9a-f]{32}")

# Throttling and server-side hiccups that S3 documents as worth retrying.
_TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
})
# Local disk problems (as opposed to network ones) that the user can fix before resuming.
_LOCAL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})
_UNREACHABLE = (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError)

T = TypeVar("T")

# Indirection so tests can observe the backoff without sleeping.
_sleep: Callable[[float], None] = time.sleep


class _ChecksumMismatch(Exception):
    """A downloaded file does not match the size or ETag the bucket listed (retried)."""


@dataclass(frozen=True)
class RemoteFile:
    """One object to download.

    Attributes
    ----------
    key : str
        Full S3 key.
    rel : str
        Path below the site folder, e.g. ``sub-0010001/ses-1/anat/sub-0010001_ses-1_T1w.nii.gz``.
    size : int
        Size in bytes, as listed.
    etag : str
        ETag without quotes.
    """

    key: str
    rel: str
    size: int
    etag: str

    @property
    def md5(self) -> str | None:
        """The content MD5 when the ETag is one (single-part upload), else None."""
        etag = self.etag.lower()
        return etag if _MD5_HEX.fullmatch(etag) else None


@dataclass
class SitePlan:
    """What one site holds and what will be downloaded from it."""

    site: str
    participants: RemoteFile | None
    t1: list[RemoteFile]
    subjects: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[RemoteFile]:
        return ([self.participants] if self.participants else []) + self.t1


# --- entry point -------------------------------------------------------------------------

def fetch_adhd200(out: str | os.PathLike, *, sites: Sequence[str] | None = None, max_subjects: int | None = None,
                  endpoint_url: str | None = None, retries: int = 5, backoff: float = 1.0) -> dict[str, Any]:
    """Download ADHD-200 T1 scans and participants tables into one BIDS folder per site.

    Parameters
    ----------
    out : path
        Destination folder; created if needed. Rerunning into the same folder resumes.
    sites : sequence of str, optional
        Site names from :data:`SITES` (case-insensitive); default all.
    max_subjects : int, optional
        Per site, keep only the first N subject ids (sorted) that have a T1 image.
    endpoint_url : str, optional
        S3 endpoint; default AWS. For mirrors and tests.
    retries : int
        Extra attempts per request after a transient failure.
    backoff : float
        Seconds before the first retry; doubles with each further retry.

    Returns
    -------
    dict
        The summary also written to ``OUT/summary.json``: per site the subjects, T1 files, bytes
        and subjects per diagnosis (``control``, ``adhd``, ``unlabelled``), plus totals.
    """
    _check_options(max_subjects, retries, backoff)
    site_names = resolve_sites(sites)
    out = _output_folder(out)
    client = make_client(endpoint_url)
    endpoint = client.meta.endpoint_url

    # List every site before downloading anything, so a wrong site or endpoint fails in seconds.
    plans = []
    for site in site_names:
        plan = select_subjects(list_site(client, site, retries=retries, backoff=backoff), max_subjects)
        log.info("%s: %d subjects, %d T1 images", site, len(plan.subjects), len(plan.t1))
        plans.append(plan)

    transfer = download_all(client, plans, out, retries=retries, backoff=backoff)
    summary = summarise(plans, out, endpoint=endpoint, max_subjects=max_subjects)
    summary["transfer"] = transfer
    atomic_write_json(out / SUMMARY_FILE, summary)
    return summary


def _check_options(max_subjects: int | None, retries: int, backoff: float) -> None:
    if max_subjects is not None and max_subjects < 1:
        raise ConfigError(f"--max-subjects must be >= 1, got {max_subjects}")
    if retries < 0:
        raise ConfigError(f"retries must be >= 0, got {retries}")
    if backoff < 0:
        raise ConfigError(f"backoff must be >= 0 seconds, got {backoff}")


def _output_folder(out: str | os.PathLike) -> Path:
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path} is a file; give a folder (it is created if missing)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_sites(sites: Sequence[str] | None) -> list[str]:
    """Validate site names against :data:`SITES`; return their canonical spelling, deduplicated."""
    if sites is None:
        return list(SITES)
    by_lower = {s.lower(): s for s in SITES}
    resolved: list[str] = []
    for name in sites:
        canonical = by_lower.get(name.strip().lower())
        if canonical is None:
            close = difflib.get_close_matches(name.strip().lower(), list(by_lower), n=1, cutoff=0.6)
            hint = f"did you mean {by_lower[close[0]]}? " if close else ""
            raise ConfigError(f"unknown ADHD-200 site {name!r} in --sites; {hint}valid sites: {', '.join(SITES)}")
        if canonical not in resolved:
            resolved.append(canonical)
    if not resolved:
        raise ConfigError(f"--sites names no site; valid sites: {', '.join(SITES)}")
    return resolved


def make_client(endpoint_url: str | None = None) -> Any:
    """An S3 client that sends unsigned (anonymous) requests, as the public bucket allows."""
    config = Config(
        signature_version=botocore.UNSIGNED,
        region_name=REGION,
        # Our own loop retries (with the caller's backoff); botocore's would multiply the attempts.
        retries={"total_max_attempts": 1},
        connect_timeout=15,
        read_timeout=60,
    )
    try:
        return boto3.session.Session().client("s3", region_name=REGION, endpoint_url=endpoint_url, config=config)
    except ValueError as exc:
        raise ConfigError(f"--endpoint-url {endpoint_url!r} is not a valid URL ({exc}); "
                          "use e.g. http://127.0.0.1:9000, or leave it out for AWS") from None


# --- listing -----------------------------------------------------------------------------

def site_prefix(site: str) -> str:
    """The S3 key prefix of a site folder (ends with '/')."""
    return f"{ROOT_PREFIX}{site}/"


def list_site(client: Any, site: str, *, retries: int = 5, backoff: float = 1.0) -> SitePlan:
    """List a site's participants table and T1 images (all subjects)."""
    prefix = site_prefix(site)
    where = f"s3://{BUCKET}/{prefix}"
    objects = _with_retries(lambda: _list_objects(client, prefix), what=f"listing {where}",
                            endpoint=client.meta.endpoint_url, retries=retries, backoff=backoff)
    participants = None
    t1 = []
    for obj in objects:
        rel = obj["Key"][len(prefix):]
        remote = RemoteFile(key=obj["Key"], rel=rel, size=int(obj["Size"]), etag=obj["ETag"].strip('"'))
        if rel == PARTICIPANTS_FILE:
            participants = remote
        elif _T1_KEY.fullmatch(rel):
            t1.append(remote)
    if not objects:
        raise FetchError(f"{where} holds nothing; check the site name and --endpoint-url")
    if not t1:
        raise FetchError(f"{where} holds {len(objects)} files but no T1 images (sub-*/ses-*/anat/*_T1w.nii.gz); "
                         "check the site name and --endpoint-url")
    if participants is None:
        log.warning("%s has no %s: its subjects will be unlabelled", where, PARTICIPANTS_FILE)
    t1.sort(key=lambda r: r.rel)
    return SitePlan(site=site, participants=participants, t1=t1, subjects=sorted({_subject_of(r) for r in t1}))


def _list_objects(client: Any, prefix: str) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        objects.extend(page.get("Contents", []))
    return objects


def _subject_of(remote: RemoteFile) -> str:
    match = _T1_KEY.fullmatch(remote.rel)
    if match is None:  # only T1 files reach here; a programming error otherwise
        raise ValueError(f"not a T1 key: {remote.key}")
    return match["subject"]


def select_subjects(plan: SitePlan, max_subjects: int | None) -> SitePlan:
    """Keep the first ``max_subjects`` subject ids (sorted) and their T1 images."""
    if max_subjects is None or len(plan.subjects) <= max_subjects:
        return plan
    keep = plan.subjects[:max_subjects]
    kept = set(keep)
    return SitePlan(site=plan.site, participants=plan.participants,
                    t1=[r for r in plan.t1 if _subject_of(r) in kept], subjects=keep)


# --- downloading -------------------------------------------------------------------------

def download_all(client: Any, plans: Sequence[SitePlan], out: Path, *, retries: int = 5,
                 backoff: float = 1.0) -> dict[str, int]:
    """Download every planned file not already complete; return transfer counts."""
    jobs = [(remote, out / plan.site / remote.rel) for plan in plans for remote in plan.files]
    todo = []
    for remote, dest in jobs:
        if is_complete(dest, remote):
            _part_path(dest).unlink(missing_ok=True)
        else:
            todo.append((remote, dest))
    skipped = len(jobs) - len(todo)
    if skipped:
        log.info("%d of %d files already complete; skipping them", skipped, len(jobs))

    total = sum(remote.size for remote, _ in todo)
    resumed = sum(_usable_part_size(_part_path(dest), remote) for remote, dest in todo)
    endpoint = client.meta.endpoint_url
    with tqdm(total=total, initial=resumed, unit="B", unit_scale=True, unit_divisor=1024, desc="adhd200",
              disable=None) as bar:
        for done, (remote, dest) in enumerate(todo):
            bar.set_postfix_str(f"file {done + 1}/{len(todo)}")
            download_file(client, remote, dest, bar=bar, endpoint=endpoint, retries=retries, backoff=backoff)
    return {"downloaded_files": len(todo), "skipped_files": skipped, "downloaded_bytes": total - resumed}


def is_complete(dest: Path, remote: RemoteFile) -> bool:
    """True when ``dest`` exists and matches the listed size and (single-part) MD5."""
    if not dest.is_file():
        return False
    if _matches(dest, remote):
        return True
    log.warning("%s does not match %s in the bucket (size or checksum); downloading it again", dest, remote.key)
    return False


def download_file(client: Any, remote: RemoteFile, dest: Path, *, bar: tqdm, endpoint: str, retries: int = 5,
                  backoff: float = 1.0) -> None:
    """Download ``remote`` into ``dest`` through ``dest.part``, resuming and retrying."""
    part = _part_path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _with_retries(lambda: _download_once(client, remote, part, bar),
                      what=f"downloading s3://{BUCKET}/{remote.key}", endpoint=endpoint, retries=retries,
                      backoff=backoff)
        os.replace(part, dest)
    except OSError as exc:
        if exc.errno not in _LOCAL_DISK_ERRNOS:
            raise
        raise FetchError(f"cannot write {part}: {exc.strerror}; free disk space or fix permissions, "
                         "then rerun the same command to resume") from exc


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PART_SUFFIX)


def _usable_part_size(part: Path, remote: RemoteFile) -> int:
    """Bytes of ``part`` worth resuming from; a part longer than the object is stale and removed."""
    if not part.is_file():
        return 0
    size = part.stat().st_size
    if size > remote.size:
        part.unlink()
        return 0
    return size


def _download_once(client: Any, remote: RemoteFile, part: Path, bar: tqdm) -> None:
    start = _usable_part_size(part, remote)
    if start < remote.size:
        _append_from(client, remote, part, start, bar)
    if _matches(part, remote):
        return
    # A resumed part can carry bad bytes from an earlier run; only a clean download tells.
    _discard(part, bar)
    if start > 0:
        log.info("the partial download of %s did not match; starting it again", remote.key)
        _append_from(client, remote, part, 0, bar)
        if _matches(part, remote):
            return
        _discard(part, bar)
    raise _ChecksumMismatch(f"the download does not match the listed size {remote.size} / ETag {remote.etag}")


def _append_from(client: Any, remote: RemoteFile, part: Path, start: int, bar: tqdm) -> None:
    """GET the object from byte ``start`` and append it to ``part`` (flushed to disk)."""
    request = {"Bucket": BUCKET, "Key": remote.key}
    if start:
        request["Range"] = f"bytes={start}-"
    response = client.get_object(**request)
    mode = "ab"
    if start and not response.get("ContentRange"):
        # The server ignored the range and sent the whole object: start the part over.
        bar.update(-start)
        mode = "wb"
    with open(part, mode) as f:
        for chunk in response["Body"].iter_chunks(_CHUNK_BYTES):
            f.write(chunk)
            bar.update(len(chunk))
        f.flush()
        os.fsync(f.fileno())


def _discard(part: Path, bar: tqdm) -> None:
    if part.exists():
        bar.update(-part.stat().st_size)
        part.unlink()


def _matches(path: Path, remote: RemoteFile) -> bool:
    if path.stat().st_size != remote.size:
        return False
    return remote.md5 is None or _md5_file(path) == remote.md5


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


# --- retries and error messages ----------------------------------------------------------

_TRANSIENT_ERRORS = (
    botocore.exceptions.ConnectionError,  # includes EndpointConnectionError, ConnectTimeoutError
    botocore.exceptions.HTTPClientError,  # includes ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
    botocore.exceptions.IncompleteReadError,
    http.client.IncompleteRead,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    _ChecksumMismatch,
)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status == 429 or _error_code(exc) in _TRANSIENT_CODES
    return isinstance(exc, _TRANSIENT_ERRORS)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _with_retries(action: Callable[[], T], *, what: str, endpoint: str, retries: int, backoff: float) -> T:
    """Run ``action``, retrying transient failures; turn failures into one-line FetchErrors."""
    attempt = 0
    while True:
        try:
            return action()
        except (ClientError, *_TRANSIENT_ERRORS) as exc:
            if not _is_transient(exc) or attempt >= retries:
                raise _user_error(exc, what=what, endpoint=endpoint, attempts=attempt + 1) from exc
            delay = backoff * 2 ** attempt
            attempt += 1
            log.warning("%s: %s; retry %d of %d in %.1f s", what, _one_line(exc), attempt, retries, delay)
            _sleep(delay)


def _user_error(exc: BaseException, *, what: str, endpoint: str, attempts: int) -> FetchError:
    tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
    if isinstance(exc, _UNREACHABLE):
        return FetchError(f"cannot reach the S3 endpoint {endpoint} ({tries}); "
                          "check your connection or --endpoint-url")
    if isinstance(exc, ClientError):
        code = _error_code(exc)
        if code == "NoSuchBucket":
            return FetchError(f"bucket '{BUCKET}' does not exist at {endpoint}; "
                              "check --endpoint-url (leave it out for the public AWS copy)")
        if code in ("AccessDenied", "403"):
            return FetchError(f"{what}: access denied by {endpoint}; the public bucket allows anonymous reads, "
                              "so check --endpoint-url")
        if not _is_transient(exc):
            return FetchError(f"{what} failed: {code} {_one_line(exc)}")
    return FetchError(f"{what} failed after {tries} ({_one_line(exc)}); "
                      "rerun the same command to resume where it stopped")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --- diagnoses and summary ---------------------------------------------------------------

def read_diagnoses(path: Path) -> dict[str, str]:
    """Labels by :func:`~brainsynth.data.labels.subject_key` from a downloaded participants table.

    Uses the same column names and value mapping as ``prepare``, but never stops the fetch: a
    table without a diagnosis column or with unknown values is reported and those subjects are
    counted as unlabelled.
    """
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    columns = [str(c).strip() for c in table.columns]
    table.columns = columns
    try:
        id_column = find_column(columns, None, ID_COLUMNS, "subject-id", "--id-column", path)
        dx_column = find_column(columns, None, LABEL_COLUMNS, "diagnosis", "--label-column", path)
    except InputError as exc:
        log.warning("%s; its subjects are counted as unlabelled", exc)
        return {}
    labels: dict[str, str] = {}
    unknown: set[str] = set()
    for raw_id, raw_dx in zip(table[id_column], table[dx_column]):
        try:
            label = parse_label(raw_dx)
        except ValueError:
            unknown.add(str(raw_dx))
            label = None
        labels[subject_key(raw_id)] = label or UNLABELLED
    if unknown:
        log.warning("%s: unknown %s values %s counted as unlabelled (prepare will ask you to fix them)",
                    path, dx_column, list_items(repr(v) for v in sorted(unknown)))
    return labels


def summarise(plans: Sequence[SitePlan], out: Path, *, endpoint: str, max_subjects: int | None) -> dict[str, Any]:
    """Subjects, files and diagnoses per site, read from the downloaded participants tables."""
    sites = {}
    for plan in plans:
        table = out / plan.site / PARTICIPANTS_FILE
        diagnoses = read_diagnoses(table) if plan.participants else {}
        subject_labels = {s: diagnoses.get(subject_key(s), UNLABELLED) for s in plan.subjects}
        sites[plan.site] = {
            "subjects": len(plan.subjects),
            "t1_files": len(plan.t1),
            "bytes": sum(r.size for r in plan.files),
            "participants_table": plan.participants is not None,
            "labels": _count_labels(subject_labels.values()),
            "subject_labels": subject_labels,
        }
    totals = {
        "subjects": sum(s["subjects"] for s in sites.values()),
        "t1_files": sum(s["t1_files"] for s in sites.values()),
        "bytes": sum(s["bytes"] for s in sites.values()),
        "labels": {lbl: sum(s["labels"][lbl] for s in sites.values()) for lbl in SUMMARY_LABELS},
    }
    return {"dataset": "adhd200", "source": f"s3://{BUCKET}/{ROOT_PREFIX}", "endpoint": endpoint,
            "out": str(out), "max_subjects": max_subjects, "sites": sites, "totals": totals}


def _count_labels(labels: Any) -> dict[str, int]:
    values = list(labels)
    return {lbl: values.count(lbl) for lbl in SUMMARY_LABELS}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a small table: subjects per site and per diagnosis."""
    header = f"  {'site':<12}{'subjects':>9}{'control':>9}{'adhd':>7}{'unlabelled':>12}{'T1 files':>10}{'size':>11}"
    lines = [f"ADHD-200 T1 scans in {summary['out']} (from {summary['source']})", header]
    rows = [*summary["sites"].items(), ("total", summary["totals"])]
    for name, s in rows:
        lbl = s["labels"]
        lines.append(f"  {name:<12}{s['subjects']:>9}{lbl['control']:>9}{lbl['adhd']:>7}{lbl[UNLABELLED]:>12}"
                     f"{s['t1_files']:>10}{_human_bytes(s['bytes']):>11}")
    transfer = summary.get("transfer")
    if transfer:
        lines.append(f"  downloaded {transfer['downloaded_files']} files "
                     f"({_human_bytes(transfer['downloaded_bytes'])}), "
                     f"{transfer['skipped_files']} already complete")
    return "\n".join(lines)


def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KB", "MB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
