"""``brainsynth fetch adhd200`` against a real S3-compatible server (moto) on 127.0.0.1.

The module fixture mirrors the FCP-INDI layout for three sites: T1 images (one subject with
two runs, one site in session 2), functional runs, sidecars and phenotypic files that must be
skipped, and participants tables with numeric codes, text diagnoses and 'pending'.
"""

from __future__ import annotations

import gzip
import json
import logging
import socket
from pathlib import Path

import boto3
import nibabel as nib
import numpy as np
import pytest
from botocore.exceptions import ClientError, IncompleteReadError
from moto.server import ThreadedMotoServer

from brainsynth.cli import main
from brainsynth.data import fetch
from brainsynth.errors import BrainsynthError, ConfigError

PREFIX = fetch.ROOT_PREFIX

# site -> participants.tsv text, T1 paths below the site, expected label of each fetched subject
PARTICIPANTS = {
    # numeric codes, ids without the sub- prefix (as ADHD-200 phenotypic tables write them)
    "KKI": "participant_id\tgender\tage\tdx\n"
           "0010001\t1\t10.2\t0\n0010002\t0\t9.1\t1\n0010003\t1\t12.0\t3\n0010004\t1\t11.5\t-999\n",
    # text diagnoses and the test release's 'pending'; 1000004 has no scan, 1000005 no row
    "NYU": "participant_id\tsex\tage\tdx\n"
           "sub-1000001\tM\t8.0\tTypically Developing\nsub-1000002\tF\t9.0\tADHD-Combined\n"
           "sub-1000003\tM\t10.0\tpending\nsub-1000004\tF\t11.0\tADHD-Inattentive\n",
    "WashU": "participant_id\tage\tdx\nsub-0015001\t7.5\t0\nsub-0015002\t8.5\t2\n",
}
T1_FILES = {
    "KKI": ["sub-0010001/ses-1/anat/sub-0010001_ses-1_run-1_T1w.nii.gz",
            "sub-0010001/ses-1/anat/sub-0010001_ses-1_run-2_T1w.nii.gz",
            "sub-0010002/ses-1/anat/sub-0010002_ses-1_run-1_T1w.nii.gz",
            "sub-0010003/ses-1/anat/sub-0010003_ses-1_run-1_T1w.nii.gz",
            "sub-0010004/ses-1/anat/sub-0010004_ses-1_run-1_T1w.nii.gz"],
    "NYU": ["sub-1000001/ses-1/anat/sub-1000001_ses-1_T1w.nii.gz",
            "sub-1000002/ses-1/anat/sub-1000002_ses-1_T1w.nii.gz",
            "sub-1000003/ses-1/anat/sub-1000003_ses-1_T1w.nii.gz",
            "sub-1000005/ses-1/anat/sub-1000005_ses-1_T1w.nii.gz"],
    "WashU": ["sub-0015001/ses-2/anat/sub-0015001_ses-2_run-1_T1w.nii.gz",
              "sub-0015002/ses-1/anat/sub-0015002_ses-1_run-1_T1w.nii.gz"],
}
EXPECTED_LABELS = {
    "KKI": {"sub-0010001": "control", "sub-0010002": "adhd", "sub-0010003": "adhd", "sub-0010004": "unlabelled"},
    "NYU": {"sub-1000001": "control", "sub-1000002": "adhd", "sub-1000003": "unlabelled",
            "sub-1000005": "unlabelled"},
    "WashU": {"sub-0015001": "control", "sub-0015002": "adhd"},
}
SITES = list(PARTICIPANTS)
SHAPE = (6, 7, 8)  # unequal axes, so a transposed read would show


def _skipped_files(site: str) -> list[str]:
    """Objects in the mirror that a fetch must not download."""
    files = [f"{site}_phenotypic.csv", "T1w.json", "task-rest_bold.json"]
    for t1 in T1_FILES[site]:
        subject_dir = t1.split("/anat/")[0]
        subject = t1.split("/")[0]
        files += [f"{subject_dir}/func/{subject}_ses-1_task-rest_run-1_bold.nii.gz",
                  t1.replace(".nii.gz", ".json"),
                  f"{subject_dir}/anat/{subject}_ses-1_T2w.nii.gz"]
    return files


def _tiny_nifti(seed: int) -> bytes:
    data = np.random.default_rng(seed).integers(0, 1000, size=SHAPE).astype(np.int16)
    return gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes(), mtime=0)


@pytest.fixture(scope="module")
def mirror() -> dict:
    """A moto S3 server on 127.0.0.1 holding a small copy of the ADHD-200 layout.

    Returns ``{"url": endpoint, "objects": {key: bytes}}`` for the objects a fetch should write.
    """
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # The writer signs with dummy credentials; the fetcher reads anonymously, which moto (like
    # FCP-INDI) only allows for public-read objects.
    writer = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    writer.create_bucket(Bucket=fetch.BUCKET)
    wanted: dict[str, bytes] = {}

    def put(key: str, body: bytes) -> None:
        writer.put_object(Bucket=fetch.BUCKET, Key=key, Body=body, ACL="public-read")

    seed = 0
    for site in SITES:
        body = PARTICIPANTS[site].encode()
        put(f"{PREFIX}{site}/participants.tsv", body)
        wanted[f"{PREFIX}{site}/participants.tsv"] = body
        for rel in T1_FILES[site]:
            seed += 1
            body = _tiny_nifti(seed)
            put(f"{PREFIX}{site}/{rel}", body)
            wanted[f"{PREFIX}{site}/{rel}"] = body
        for rel in _skipped_files(site):
            put(f"{PREFIX}{site}/{rel}", b"not for brainsynth")
    put(f"{PREFIX}OHSU_phenotypic.csv", b"outside every site folder")
    yield {"url": url, "objects": wanted}
    server.stop()


class RecordingClient:
    """Wraps a real S3 client: records each GetObject and injects faults into chosen ones.

    ``faults`` maps an S3 key to a list of faults consumed one per GET: ``"cut"`` returns a body
    that breaks after half of its bytes, ``"503"`` raises a ServiceUnavailable error, ``None``
    passes the request through.
    """

    def __init__(self, client, faults: dict[str, list] | None = None):
        self._client = client
        self._faults = {k: list(v) for k, v in (faults or {}).items()}
        self.gets: list[tuple[str, str | None]] = []

    def __getattr__(self, name):
        return getattr(self._client, name)

    def get_object(self, **request):
        key = request["Key"]
        self.gets.append((key, request.get("Range")))
        pending = self._faults.get(key)
        fault = pending.pop(0) if pending else None
        if fault == "503":
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "Please reduce your request rate"},
                               "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject")
        response = self._client.get_object(**request)
        if fault == "cut":
            response["Body"] = _CutBody(response["Body"].read())
        return response

    def keys_fetched(self) -> list[str]:
        return [key for key, _ in self.gets]


class _CutBody:
    """A response body whose connection drops after half of the bytes."""

    def __init__(self, data: bytes):
        self.data = data
        self.sent = len(data) // 2

    def iter_chunks(self, chunk_size: int):
        yield self.data[:self.sent]
        raise IncompleteReadError(actual_bytes=self.sent, expected_bytes=len(self.data))


@pytest.fixture
def recording(monkeypatch):
    """Make :func:`fetch.make_client` return RecordingClients; yields the list of clients made."""
    made: list[RecordingClient] = []
    faults: dict[str, list] = {}
    real_make_client = fetch.make_client

    def make_client(endpoint_url=None):
        client = RecordingClient(real_make_client(endpoint_url), faults)
        faults.clear()  # faults apply to the next client only
        made.append(client)
        return client

    monkeypatch.setattr(fetch, "make_client", make_client)
    return made, faults


def _fetch(out: Path, mirror: dict, **options) -> dict:
    options = {"sites": SITES, "retries": 0, "backoff": 0.0, **options}
    return fetch.fetch_adhd200(out, endpoint_url=mirror["url"], **options)


def _written_files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def _expected_files(mirror: dict, sites=SITES) -> dict[str, bytes]:
    """Local relative path -> bytes for every object a full fetch of ``sites`` writes."""
    return {key[len(PREFIX):]: body for key, body in mirror["objects"].items()
            if key[len(PREFIX):].split("/")[0] in sites}


def _key(site: str, rel: str) -> str:
    return f"{PREFIX}{site}/{rel}"


# --- listing and a full fetch -------------------------------------------------------------

def test_list_site_keeps_only_t1_images_and_the_participants_table(mirror):
    plan = fetch.list_site(fetch.make_client(mirror["url"]), "KKI", retries=0, backoff=0)
    assert plan.participants.key == _key("KKI", "participants.tsv")
    assert [r.rel for r in plan.t1] == T1_FILES["KKI"]
    assert plan.subjects == sorted(EXPECTED_LABELS["KKI"])
    assert all(r.md5 == r.etag for r in plan.files)  # single-part uploads: the ETag is the MD5


def test_fetch_writes_one_bids_folder_per_site_with_labels_from_the_tables(mirror, tmp_path, recording):
    out = tmp_path / "adhd200"
    summary = _fetch(out, mirror)

    expected = _expected_files(mirror)
    assert _written_files(out) == set(expected) | {"summary.json"}  # no func/, sidecars, .part
    for rel, body in expected.items():
        assert (out / rel).read_bytes() == body, rel
    image = nib.load(out / "KKI" / T1_FILES["KKI"][1])
    assert image.shape == SHAPE

    for site in SITES:
        s = summary["sites"][site]
        assert s["subject_labels"] == EXPECTED_LABELS[site]
        assert s["subjects"] == len(EXPECTED_LABELS[site])
        assert s["t1_files"] == len(T1_FILES[site])
        assert s["bytes"] == sum(len(b) for r, b in expected.items() if r.startswith(f"{site}/"))
    assert summary["sites"]["KKI"]["labels"] == {"control": 1, "adhd": 2, "unlabelled": 1}
    assert summary["sites"]["NYU"]["labels"] == {"control": 1, "adhd": 1, "unlabelled": 2}
    assert summary["totals"]["labels"] == {"control": 3, "adhd": 4, "unlabelled": 3}
    assert summary["totals"]["subjects"] == 10
    assert summary["transfer"] == {"downloaded_files": len(expected), "skipped_files": 0,
                                   "downloaded_bytes": sum(len(b) for b in expected.values())}
    assert json.loads((out / "summary.json").read_text()) == summary
    assert sorted(recording[0][0].keys_fetched()) == sorted(mirror["objects"])

    # A second run finds everything complete and sends no GetObject at all.
    again = _fetch(out, mirror)
    assert recording[0][1].gets == []
    assert again["transfer"] == {"downloaded_files": 0, "skipped_files": len(expected), "downloaded_bytes": 0}
    assert again["sites"] == summary["sites"]


def test_max_subjects_keeps_the_first_subjects_by_sorted_id(mirror, tmp_path):
    out = tmp_path / "adhd200"
    summary = _fetch(out, mirror, sites=["KKI", "NYU"], max_subjects=2)
    assert summary["sites"]["KKI"]["subject_labels"] == {"sub-0010001": "control", "sub-0010002": "adhd"}
    assert summary["sites"]["KKI"]["t1_files"] == 3  # both runs of sub-0010001
    assert summary["sites"]["NYU"]["subject_labels"] == {"sub-1000001": "control", "sub-1000002": "adhd"}
    assert sorted(p.name for p in (out / "KKI").iterdir()) == ["participants.tsv", "sub-0010001", "sub-0010002"]
    assert not (out / "WashU").exists()


# --- resuming, retries and verification ---------------------------------------------------

def test_interrupted_download_leaves_a_part_file_and_the_rerun_resumes_it(mirror, tmp_path, recording):
    made, faults = recording
    out = tmp_path / "adhd200"
    broken_rel = T1_FILES["KKI"][2]
    broken = _key("KKI", broken_rel)
    faults[broken] = ["cut"]

    with pytest.raises(fetch.FetchError) as info:
        _fetch(out, mirror, sites=["KKI"])
    message = str(info.value)
    assert "\n" not in message
    assert broken in message and "rerun the same command to resume" in message
    body = mirror["objects"][broken]
    part = out / "KKI" / (broken_rel + ".part")
    assert part.read_bytes() == body[:len(body) // 2]
    assert not (out / "KKI" / broken_rel).exists()
    completed_first = set(made[0].keys_fetched()) - {broken}
    assert completed_first == {_key("KKI", "participants.tsv"), _key("KKI", T1_FILES["KKI"][0]),
                               _key("KKI", T1_FILES["KKI"][1])}

    summary = _fetch(out, mirror, sites=["KKI"])
    rerun = made[1].gets
    # The broken file continues where it stopped; completed files are not fetched again.
    assert rerun[0] == (broken, f"bytes={len(body) // 2}-")
    assert {key for key, _ in rerun} == {broken, _key("KKI", T1_FILES["KKI"][3]), _key("KKI", T1_FILES["KKI"][4])}
    assert len(rerun) == 3
    assert (out / "KKI" / broken_rel).read_bytes() == body
    assert not part.exists()
    assert summary["transfer"]["skipped_files"] == 3
    assert _written_files(out) == set(_expected_files(mirror, ["KKI"])) | {"summary.json"}


def test_transient_errors_are_retried_with_exponential_backoff(mirror, tmp_path, recording, monkeypatch):
    made, faults = recording
    delays: list[float] = []
    monkeypatch.setattr(fetch, "_sleep", delays.append)
    cut, busy = _key("WashU", T1_FILES["WashU"][0]), _key("WashU", T1_FILES["WashU"][1])
    faults[cut] = ["cut"]
    faults[busy] = ["503", "503"]

    out = tmp_path / "adhd200"
    summary = _fetch(out, mirror, sites=["WashU"], retries=2, backoff=0.5)

    assert delays == [0.5, 0.5, 1.0]  # one retry for the cut body, two for the 503s
    assert made[0].keys_fetched().count(cut) == 2
    assert made[0].keys_fetched().count(busy) == 3
    assert (out / "WashU" / T1_FILES["WashU"][0]).read_bytes() == mirror["objects"][cut]
    assert summary["sites"]["WashU"]["labels"] == {"control": 1, "adhd": 1, "unlabelled": 0}


def test_retries_give_up_with_one_line(mirror, tmp_path, recording):
    _, faults = recording
    busy = _key("WashU", T1_FILES["WashU"][0])
    faults[busy] = ["503", "503"]
    with pytest.raises(fetch.FetchError, match=r"failed after 2 attempts \(.*ServiceUnavailable.*\); rerun"):
        _fetch(tmp_path / "out", mirror, sites=["WashU"], retries=1)


def test_corrupt_part_and_corrupt_complete_files_are_downloaded_again(mirror, tmp_path, recording):
    made, _ = recording
    out = tmp_path / "adhd200"
    _fetch(out, mirror, sites=["NYU"])
    flipped_rel, part_rel = T1_FILES["NYU"][0], T1_FILES["NYU"][1]
    flipped, stale = out / "NYU" / flipped_rel, out / "NYU" / part_rel
    good = flipped.read_bytes()
    flipped.write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])  # same size, wrong content
    stale_body = mirror["objects"][_key("NYU", part_rel)]
    stale.unlink()
    Path(str(stale) + ".part").write_bytes(b"\0" * (len(stale_body) // 2))  # garbage to resume from

    summary = _fetch(out, mirror, sites=["NYU"])

    assert made[1].gets == [
        (_key("NYU", flipped_rel), None),
        (_key("NYU", part_rel), f"bytes={len(stale_body) // 2}-"),  # resumed, failed the MD5 check ...
        (_key("NYU", part_rel), None),                              # ... so downloaded from the start
    ]
    assert flipped.read_bytes() == good
    assert stale.read_bytes() == stale_body
    assert not Path(str(stale) + ".part").exists()
    assert summary["transfer"]["downloaded_files"] == 2


def test_multipart_etag_is_checked_by_size_only(tmp_path):
    path = tmp_path / "scan_T1w.nii.gz"
    path.write_bytes(b"x" * 10)
    multipart = fetch.RemoteFile(key="k", rel="scan_T1w.nii.gz", size=10, etag="29d80c016dc56f38a82c93319ad06448-2")
    assert multipart.md5 is None
    assert fetch.is_complete(path, multipart)
    assert not fetch.is_complete(path, fetch.RemoteFile(key="k", rel="r", size=11, etag=multipart.etag))
    single = fetch.RemoteFile(key="k", rel="r", size=10, etag="29D80C016DC56F38A82C93319AD06448")
    assert single.md5 == "29d80c016dc56f38a82c93319ad06448"
    assert not fetch.is_complete(path, single)  # right size, wrong MD5


# --- errors the user sees -----------------------------------------------------------------

@pytest.mark.parametrize(("sites", "expected"), [
    (["KKl"], r"unknown ADHD-200 site 'KKl' in --sites; did you mean KKI\? valid sites: Brown, KKI, .*WashU"),
    (["peking1"], r"did you mean Peking_1\?"),
    (["Mars"], r"unknown ADHD-200 site 'Mars' in --sites; valid sites: Brown"),
    ([], r"--sites names no site"),
])
def test_unknown_site_names_are_refused_with_a_suggestion(sites, expected, tmp_path):
    with pytest.raises(ConfigError, match=expected):
        fetch.fetch_adhd200(tmp_path / "out", sites=sites, endpoint_url="http://127.0.0.1:9")
    assert not (tmp_path / "out").exists()


def test_site_names_are_case_insensitive_and_deduplicated():
    assert fetch.resolve_sites(["kki", "KKI", " nyu "]) == ["KKI", "NYU"]
    assert fetch.resolve_sites(None) == list(fetch.SITES)


def test_a_site_missing_from_the_bucket_is_named(mirror, tmp_path):
    with pytest.raises(fetch.FetchError) as info:
        _fetch(tmp_path / "out", mirror, sites=["KKI", "OHSU"])
    assert str(info.value) == (f"s3://fcp-indi/{PREFIX}OHSU/ holds nothing; "
                               "check the site name and --endpoint-url")
    assert not (tmp_path / "out" / "KKI").exists()  # every site is listed before any download


def test_a_missing_bucket_is_named(mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "BUCKET", "no-such-bucket")
    with pytest.raises(fetch.FetchError, match=r"^bucket 'no-such-bucket' does not exist at http://127\.0\.0\.1"):
        _fetch(tmp_path / "out", mirror, sites=["KKI"])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_endpoint_gives_one_line(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(fetch.FetchError) as info:
        fetch.fetch_adhd200(tmp_path / "out", sites=["KKI"], endpoint_url=url, retries=0, backoff=0)
    assert str(info.value) == (f"cannot reach the S3 endpoint {url} (1 attempt); "
                               "check your connection or --endpoint-url")
    assert isinstance(info.value, BrainsynthError)


@pytest.mark.parametrize(("options", "expected"), [
    ({"max_subjects": 0}, "--max-subjects must be >= 1"),
    ({"retries": -1}, "retries must be >= 0"),
    ({"endpoint_url": "not a url"}, "--endpoint-url 'not a url' is not a valid URL"),
])
def test_bad_options_are_refused(options, expected, tmp_path):
    with pytest.raises(ConfigError, match=expected):
        fetch.fetch_adhd200(tmp_path / "out", sites=["KKI"], **options)


def test_participants_table_with_unknown_values_counts_them_unlabelled(tmp_path, caplog):
    table = tmp_path / "participants.tsv"
    table.write_text("participant_id\tDX\n0010001\t0\n10002\tADHD-Hyperactive/Impulsive\n"
                     "sub-0010003\tmaybe\n0010004\t\n")
    with caplog.at_level(logging.WARNING, logger="brainsynth.fetch"):
        labels = fetch.read_diagnoses(table)
    assert labels == {"10001": "control", "10002": "adhd", "10003": "unlabelled", "10004": "unlabelled"}
    assert "'maybe'" in caplog.text


# --- the command line ---------------------------------------------------------------------

def test_cli_fetch_prints_subjects_per_site_and_diagnosis(mirror, tmp_path, capsys):
    out = tmp_path / "adhd200"
    code = main(["-q", "fetch", "adhd200", "--out", str(out), "--sites", "NYU,WashU", "--endpoint-url", mirror["url"]])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["site", "subjects", "control", "adhd", "unlabelled", "T1", "files", "size"]
    assert lines[2].split()[:6] == ["NYU", "4", "1", "1", "2", "4"]
    assert lines[3].split()[:6] == ["WashU", "2", "1", "1", "0", "2"]
    assert lines[4].split()[:6] == ["total", "6", "2", "2", "2", "6"]
    assert lines[5].startswith("  downloaded 8 files")


def test_cli_fetch_bad_site_exits_2_with_one_line(tmp_path, capsys):
    code = main(["fetch", "adhd200", "--out", str(tmp_path / "o"), "--sites", "NYU,Pekin_2"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("brainsynth: error: unknown ADHD-200 site 'Pekin_2' in --sites; did you mean Peking_2?")


# --- hand-over to prepare -----------------------------------------------------------------

def test_a_fetched_site_folder_is_read_by_prepare(mirror, tmp_path):
    from brainsynth.data.dataset import load_dataset
    from brainsynth.api import prepare_dataset

    # NYU: text diagnoses, 'pending', a table row without a scan and a scan without a row.
    out = tmp_path / "adhd200"
    summary = _fetch(out, mirror, sites=["NYU"])
    dataset = prepare_dataset(out / "NYU", tmp_path / "nyu-dataset", skip_unlabeled=True, inplane=0, patch=6,
                              size=4, slices=(1, 5), folds=1, test_fraction=0.0)

    labelled = {s: lbl for s, lbl in summary["sites"]["NYU"]["subject_labels"].items() if lbl != "unlabelled"}
    assert labelled == {"sub-1000001": "control", "sub-1000002": "adhd"}
    subjects = load_dataset(dataset).summary()["subjects"]
    assert {s["id"]: s["label"] for s in subjects} == labelled
    assert all(s["n_images"] == 5 for s in subjects)  # slices 1..5, one centred patch each
