"""Hostile documents and hostile model outputs: every document ends as a result or a failure
with its cause, the run carries on, and nothing crashes the store."""

from __future__ import annotations

import pytest
from migbench.datasets import load_dataset
from migbench.emulator import GroundTruthResponder, ScriptedResponder, run_emulator
from migbench.fixtures.hostile import FILES, HOSTILE_DIR, HOSTILE_OUTPUTS
from migbench.registry import create_backend
from migbench.retry import RetryPolicy
from migbench.runner import Runner, RunOptions
from migbench.store import RunStore

from tests.conftest import ScriptedBackend

FAST = RunOptions(retry=RetryPolicy(max_attempts=2, base_s=0.001, cap_s=0.002))
EXPECT = {f.name: f.expect for f in FILES if f.in_ground_truth}


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"):
        monkeypatch.delenv(k, raising=False)


def _check_outcomes(rows: dict[str, dict]) -> None:
    assert set(rows) == set(EXPECT), "every ground truth row ends as a stored result or failure"
    for name, expect in EXPECT.items():
        row = rows[name]
        if expect == "ok":
            assert row.status == "ok", (name, row.error)
        else:
            assert row.status == "failed" and row.error_class == expect, (name, row.status, row.error)
            assert row.error and "\n" not in row.error.strip(), "one-line cause"


def test_hostile_corpus_through_bedrock_against_the_emulator(tmp_path, aws_env):
    ds = load_dataset(HOSTILE_DIR)
    with run_emulator(responder=GroundTruthResponder(ds)) as emu:
        backend = create_backend("nova-pro", options={"endpoint_url": emu.url, "allow_loopback": True})
        store = RunStore(tmp_path)
        s = Runner(backend, ds, store, FAST).run()
        backend.close()
    rows = {d.doc_id: d for d in store.documents(s.run_id)}
    assert "escapes the dataset folder" in rows["../../etc/passwd"].error
    _check_outcomes(rows)
    # The 9000 px strip was shrunk under Nova's 8000 px limit rather than refused by the service.
    assert rows["huge_strip.png"].status == "ok"
    assert s.remaining == 0


@pytest.mark.parametrize("name", sorted(HOSTILE_OUTPUTS))
def test_hostile_model_outputs_are_stored_parsed_and_rescorable(tmp_path, name):
    from migbench.contracts import Document
    from migbench.datasets import Dataset

    doc = Document("r.png", HOSTILE_DIR / "receipt.png", "receipt", {"TOTAL_AMOUNT": "$12.34"})
    ds = Dataset(HOSTILE_DIR, HOSTILE_DIR / "ground_truth.csv", [doc], hash="h")

    class Hostile(ScriptedBackend):
        def generate(self, request):
            resp = super().generate(request)
            resp.text = HOSTILE_OUTPUTS[name]
            return resp

    store = RunStore(tmp_path)
    s = Runner(Hostile(), ds, store, FAST).run()
    (row,) = store.documents(s.run_id)
    assert row.status == "ok" and isinstance(row.fields, dict)
    assert row.response.text is not None


def test_hostile_output_through_the_real_http_path(tmp_path, aws_env):
    ds = load_dataset(HOSTILE_DIR)
    texts = [HOSTILE_OUTPUTS[k] for k in sorted(HOSTILE_OUTPUTS) if len(HOSTILE_OUTPUTS[k]) < 2_000_000]
    with run_emulator(responder=ScriptedResponder(texts)) as emu:
        backend = create_backend("nova-lite", options={"endpoint_url": emu.url, "allow_loopback": True})
        store = RunStore(tmp_path)
        s = Runner(backend, ds, store, FAST).run()
        backend.close()
    rows = store.documents(s.run_id)
    assert len(rows) == len(ds.documents) + len(ds.problems)
    assert all(r.status in ("ok", "failed") for r in rows)


def test_fake_credentials_never_reach_store_logs_exports_or_report(tmp_path, monkeypatch, caplog, capsys):
    import logging

    from migbench.cli import main as cli_main

    key, secret = "AKIAMIGBENCHFAKE0001", "migbenchFAKEsecretDoNotLeak/0123456789abcd"
    token = "FAKEsessionTOKENmigbench0123456789"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    caplog.set_level(logging.DEBUG)
    ds = load_dataset(HOSTILE_DIR)
    results = tmp_path / "results"
    with run_emulator(responder=GroundTruthResponder(ds)) as emu:  # refuses the unknown key: 403s
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", emu.url)
        assert cli_main(["run", "--backend", "nova-pro", "--dataset", str(HOSTILE_DIR), "--results", str(results),
                         "--allow-loopback"]) == 0
        assert emu.stats.snapshot()["by_status"].get(403, 0) > 0  # the service refused the fake key
    assert cli_main(["export", "latest", "--results", str(results), "--out", str(tmp_path / "pred.csv")]) == 0
    assert cli_main(["report", "--results", str(results), "--out", str(tmp_path / "report.html")]) == 0
    out = capsys.readouterr()
    blobs = [p.read_bytes() for p in [*results.iterdir(), *tmp_path.iterdir()] if p.is_file()]
    blobs += [out.out.encode(), out.err.encode(), caplog.text.encode()]
    for secret_value in (key, secret, token):
        assert not any(secret_value.encode() in b for b in blobs), secret_value


def _offline_outcomes(backend, tmp_path) -> dict[str, dict]:
    ds = load_dataset(HOSTILE_DIR)
    store = RunStore(tmp_path)
    s = Runner(backend, ds, store, FAST).run()
    backend.close()
    rows = {d.doc_id: d for d in store.documents(s.run_id)}
    assert "escapes the dataset folder" in rows["../../etc/passwd"].error
    return rows


def test_hostile_corpus_through_a_tiny_local_model(tmp_path, tiny_model):
    backend = create_backend("qwen2.5-vl", model=str(tiny_model("qwen2_5_vl")),
                             options={"max_image_dim": 448, "batch_size": 4})
    _check_outcomes(_offline_outcomes(backend, tmp_path))


@pytest.mark.slow
def test_hostile_corpus_through_the_ocr_baseline(tmp_path):
    pytest.importorskip("rapidocr_onnxruntime", reason="pip install 'migbench[ocr]'")
    rows = _offline_outcomes(create_backend("ocr-baseline"), tmp_path)
    _check_outcomes(rows)
    # Every loadable page shows the same receipt: the OCR reads its total through every format quirk.
    for name in ("cmyk.jpg", "palette.png", "rgba_alpha.png", "png_named.jpg", "receipt.png"):
        assert rows[name].fields["TOTAL_AMOUNT"] in ("$12.34", "12.34"), (name, rows[name].fields)


def test_an_emulated_dry_run_and_a_real_aws_run_never_share_a_run(tmp_path, aws_env):
    from migbench.fixtures import default_dataset

    ds = load_dataset(default_dataset())
    with run_emulator(responder=GroundTruthResponder(ds)) as emu:
        dry = create_backend("nova-pro", options={"endpoint_url": emu.url, "allow_loopback": True})
        real = create_backend("nova-pro", options={"allow_loopback": True})
        store = RunStore(tmp_path)
        assert Runner(dry, ds, store, FAST).meta().identity() != Runner(real, ds, store, FAST).meta().identity()
