"""The HTML migration report, rendered from a real run store.

The store holds realistic rows: real ground truth (the checked-in synthetic set), model-like answers
rendered as text, then parsed and scored by the real parser and scorer, exactly as the runner stores
them; audit entries as the Bedrock adapter writes them. No OCR, no model: fast."""

from __future__ import annotations

import random
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from migbench.contracts import NOT_FOUND, AuditEntry, DocResult, ErrorClass, Response
from migbench.cost import load_pricing, token_cost, token_price
from migbench.datasets import load_dataset
from migbench.parsing import parse_output, render_kv
from migbench.report import main
from migbench.report_data import NO_NETWORK
from migbench.schema import load_schema
from migbench.scoring import document_f1, score_document
from migbench.stats import paired_bootstrap
from migbench.store import RunMeta, RunStore

DATASET = Path(__file__).resolve().parents[2] / "fixtures" / "synthetic_small"
SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'
SECRET_ABN = "68 030 664 705"  # the first invoice's ABN: must vanish from the errors section under --redact


def _perturb(gt: dict[str, str], error_rate: float, rng: random.Random) -> dict[str, str]:
    out = {}
    for name, value in gt.items():
        r = rng.random()
        if r >= error_rate:
            out[name] = value
        elif value == NOT_FOUND:
            out[name] = "Acme Pty Ltd"  # a hallucination
        elif r < error_rate / 3:
            out[name] = NOT_FOUND  # a miss
        else:
            out[name] = value[::-1] if not value.startswith("$") else "$9999.99"  # a confident wrong value
    return out


def build_store(results: Path, *, error_rates: dict[str, float] | None = None, fail_one: bool = True, hostile: bool = True,
                lite_emulated: bool = True, local: bool = False) -> dict[str, str]:
    """Runs of ocr-baseline, nova-pro and nova-lite (emulated unless told) on the same documents,
    optionally a local (own-GPU) run too -> {backend: run_id}."""
    error_rates = {"ocr-baseline": 0.35, "nova-pro": 0.08, "nova-lite": 0.05, "internvl3": 0.1, **(error_rates or {})}
    ds = load_dataset(DATASET)
    schema = load_schema()
    store = RunStore(results)
    ids = {}
    families = {"ocr-baseline": "ocr", "nova-pro": "bedrock", "nova-lite": "bedrock", "internvl3": "local"}
    models = {"ocr-baseline": "rapidocr+rules", "nova-pro": "amazon.nova-pro-v1:0", "nova-lite": "amazon.nova-lite-v1:0",
              "internvl3": "/models/InternVL3-8B"}
    backends = ("ocr-baseline", "nova-pro", "nova-lite") + (("internvl3",) if local else ())
    for k, backend in enumerate(backends):
        rng = random.Random(k)
        meta = RunMeta(backend=backend, family=families[backend], model=models[backend],
                       config={"region": "ap-southeast-2"} if k else {}, dataset_path=str(DATASET),
                       dataset_hash=ds.hash, n_documents=len(ds.documents), prompt_hash="abc123def456",
                       prompt_style="kv", versions={"python": "3.11", "boto3": "1.35"}, git_commit="deadbeef",
                       host="testhost (x86_64, Linux)")
        run_id, _ = store.open_run(meta)
        ids[backend] = run_id
        # An emulated run talks to the local emulator; a real one to the Sydney endpoint.
        host = "127.0.0.1" if (backend == "nova-lite" and lite_emulated) else "bedrock-runtime.ap-southeast-2.amazonaws.com"
        for i, doc in enumerate(ds.documents):
            pred = _perturb(doc.ground_truth, error_rates[backend], rng)
            text = render_kv(pred)
            if backend == "nova-pro" and i == 0 and hostile:
                text = f"{SCRIPT}\nSUPPLIER_NAME: {IMG}\n" + text.replace(f"SUPPLIER_NAME: {pred['SUPPLIER_NAME']}\n", "")
            cloud = families[backend] == "bedrock"
            resp = Response(text=text, latency_s=(2.0 + rng.random() * 2) if not cloud else 0.8 + rng.random(),
                            peak_memory_mb=9000.0 if families[backend] == "local" else None,
                            input_tokens=1800 + i if cloud else None, output_tokens=300 + i if cloud else None,
                            attempts=3 if (cloud and i == 1) else 1, throttled=2 if (cloud and i == 1) else 0,
                            retry_wait_s=1.5 if (cloud and i == 1) else 0.0,
                            region="ap-southeast-2" if cloud else None, model_id=models[backend])
            price = token_price(load_pricing(), models[backend])  # as the runner prices each document
            resp.cost_usd = token_cost(price, resp.input_tokens, resp.output_tokens) if price else None
            if backend == "nova-pro" and i == 2 and fail_one:  # a document that failed after retries
                resp = Response(attempts=3, error_class=ErrorClass.TIMEOUT, error="ModelTimeoutException: read timeout",
                                input_tokens=1800, output_tokens=0, region="ap-southeast-2",
                                cost_usd=token_cost(price, 1800, 0))
                result = DocResult(doc.doc_id, doc.doc_type, doc.tier, "failed", resp, error_class="timeout",
                                   error=resp.error)
            else:
                fields = parse_output(text, doc.doc_type, schema)
                scores = score_document(doc.ground_truth, fields, schema)
                result = DocResult(doc.doc_id, doc.doc_type, doc.tier, "ok", resp, fields, scores,
                                   document_f1(scores))
            store.save_result(run_id, result, doc.ground_truth)
            if cloud:
                for attempt in range(1, resp.attempts + 1):
                    store.add_audit(run_id, AuditEntry(
                        backend, "bedrock-runtime", "Converse", "ap-southeast-2", host, models[backend],
                        doc_id=doc.doc_id, request_id=f"req-{i}-{attempt}",
                        status=429 if attempt < resp.attempts else 200, attempt=attempt, bytes_sent=50_000))
        if backend == "nova-pro":  # the guard refused a request that would have left Australia
            store.add_audit(run_id, AuditEntry(backend, "bedrock-runtime", "Converse", "us-east-1",
                                               "bedrock-runtime.us-east-1.amazonaws.com", "global.amazon.nova-pro-v1:0",
                                               doc_id=ds.documents[3].doc_id, status=None, allowed=False,
                                               reason="inference profile 'global.amazon.nova-pro-v1:0' (global.) "
                                                      "routes outside the allowed regions"))
        store.update_run(run_id, status="complete", add_wall_s=12.0 if cloud else 60.0,
                         emulated=True if (backend == "nova-lite" and lite_emulated) else None,
                         describe={"backend": backend, "model": models[backend]})
    store.close()
    return ids


# ------------------------------------------------------------------------------------- helpers
SECTIONS = ("decision", "accuracy", "latency", "cost", "review", "residency", "errors", "provenance")


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of each <section id=...>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    p = _Tags()
    p.feed(html)
    return p.tags


def section(html: str, name: str) -> str:
    m = re.search(rf'<section id="{name}">(.*?)</section>', html, re.DOTALL)
    assert m, f"section {name} missing"
    return m.group(1)


def render(results: Path, out: Path, *args: str) -> str:
    assert main(["--results", str(results), "--out", str(out), *args]) == 0
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    d = tmp_path_factory.mktemp("results")
    return d, build_store(d)


@pytest.fixture(scope="module")
def report(store_dir: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> str:
    return render(store_dir[0], tmp_path_factory.mktemp("out") / "report.html")


# --------------------------------------------------------------------------------------- tests
def test_report_has_every_section_once(report: str) -> None:
    ids = [a.get("id") for t, a in tags(report) if t == "section"]
    assert ids == list(SECTIONS)


def test_the_navigation_links_every_section_and_only_sections(report: str) -> None:
    nav = re.search(r"<nav.*?</nav>", report, re.DOTALL)
    links = re.findall(r'href="#([\w-]+)"', nav[0] if nav else "")
    assert sorted(links) == sorted(SECTIONS)


def test_model_output_with_markup_is_shown_as_text_never_as_tags(report: str) -> None:
    found = tags(report)
    assert not [t for t, _ in found if t in ("script", "img", "iframe", "object", "embed", "link")]
    assert not [(t, k) for t, a in found for k in a if k.lower().startswith("on")], "an event handler attribute leaked"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section(report, "errors")
    assert "&lt;img src=x onerror=" in section(report, "errors")


def test_report_is_self_contained_with_no_external_reference(report: str) -> None:
    for tag, attrs in tags(report):
        for key in ("src", "srcset", "action", "data", "poster"):
            assert key not in attrs, f"<{tag} {key}=...> would load something"
        if "href" in attrs:  # in-page anchors, and source links a reader may open (never loaded by the page)
            href = attrs["href"] or ""
            assert href.startswith("#") or (tag == "a" and href.startswith("https://")
                                            and attrs.get("rel") == "noopener noreferrer"), f"<{tag} href={href}>"
    assert "url(" not in report and "@import" not in report
    assert report.count("<svg") >= 6  # charts are inline SVG


def test_redact_replaces_expected_and_extracted_values_with_their_length(
        store_dir: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    plain = section(render(store_dir[0], tmp_path / "plain.html", "--runs", store_dir[1]["nova-pro"]), "errors")
    redacted = section(render(store_dir[0], tmp_path / "red.html", "--runs", store_dir[1]["nova-pro"], "--redact"),
                       "errors")
    assert SECRET_ABN in plain and "alert(1)" in plain  # the unredacted drill-down shows the values
    assert SECRET_ABN not in redacted and "alert(1)" not in redacted
    assert re.search(r"\[redacted\] \(\d+ chars\)", redacted)
    assert "<code>BUSINESS_ABN</code>" in redacted  # which field was wrong stays visible


def test_emulated_run_is_badged_in_every_table_row_and_never_recommended(report: str) -> None:
    rows = re.findall(r"<tr>(.*?)</tr>", report, re.DOTALL)
    lite_rows = [r for r in rows if re.search(r'class="who">nova-lite<', r)]
    assert len(lite_rows) >= 8  # gates, frontier, accuracy, paired, latency, cost, residency, provenance ...
    for r in lite_rows:
        assert "EMULATED" in r, r
    decision = section(report, "decision")
    assert "emulated: not evidence" in decision
    assert "Migrate to nova-lite" not in decision


def test_offline_run_says_it_made_no_network_requests(report: str) -> None:
    res = section(report, "residency")
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", res, re.DOTALL) if 'class="who">ocr-baseline<' in r)
    assert NO_NETWORK in row
    assert "global.amazon.nova-pro-v1:0" in res and "routes outside the allowed regions" in res  # the refusal


def test_no_recommendation_names_each_candidates_failed_gates(report: str) -> None:
    decision = section(report, "decision")
    assert "No recommendation: no backend passes every gate" in decision
    assert re.search(r"<li>nova-pro: fails [^<]*failure rate", decision)


def test_recommends_the_cheapest_real_backend_passing_every_gate(tmp_path: Path) -> None:
    perfect = {"nova-pro": 0.0, "nova-lite": 0.0}
    emu = tmp_path / "emu"
    build_store(emu, error_rates=perfect, fail_one=False, hostile=False)
    html = render(emu, tmp_path / "a.html")
    # nova-lite is cheaper but emulated: the real nova-pro is the recommendation
    assert "Migrate to nova-pro" in section(html, "decision")
    real = tmp_path / "real"
    build_store(real, error_rates=perfect, fail_one=False, hostile=False, lite_emulated=False)
    assert "Migrate to nova-lite" in section(render(real, tmp_path / "b.html"), "decision")


def test_paired_difference_is_the_bootstrap_of_per_document_scores(store_dir: tuple[Path, dict[str, str]],
                                                                   tmp_path: Path) -> None:
    from migbench.report import generate

    results, ids = store_dir
    model = generate(results, tmp_path / "r.html")
    pro = next(v for v in model["runs"] if v["backend"] == "nova-pro")
    assert model["baseline"]["backend"] == "ocr-baseline"
    with RunStore(results) as s:
        a = {d.doc_id: (d.doc_f1 if d.status == "ok" else 0.0) for d in s.documents(ids["nova-pro"])}
        b = {d.doc_id: d.doc_f1 for d in s.documents(ids["ocr-baseline"])}
    keys = sorted(a)
    diff, lo, hi = paired_bootstrap([a[k] for k in keys], [b[k] for k in keys])
    assert (pro["paired"]["diff"], pro["paired"]["lo"], pro["paired"]["hi"]) == pytest.approx((diff, lo, hi))
    assert pro["paired"]["n"] == len(keys) == 24


def test_latency_section_counts_throttling_retries_and_throughput(store_dir: tuple[Path, dict[str, str]],
                                                                  tmp_path: Path) -> None:
    from migbench.report import generate

    model = generate(store_dir[0], tmp_path / "r.html")
    lat = next(v for v in model["runs"] if v["backend"] == "nova-pro")["latency"]
    assert lat["throttled"] == 2 and lat["docs_throttled"] == 1
    assert lat["retries"] == 4  # two documents took three attempts
    assert lat["docs_per_min"] == pytest.approx(24 / 12.0 * 60)
    assert lat["n"] == 23 and lat["p50"] <= lat["p95"] <= lat["p99"]


def test_errors_section_lists_failure_causes_and_bounds_the_drill_down(store_dir: tuple[Path, dict[str, str]],
                                                                       tmp_path: Path) -> None:
    html = render(store_dir[0], tmp_path / "r.html", "--top-n", "3")
    errors = section(html, "errors")
    assert "ModelTimeoutException: read timeout" in errors and "<code>timeout</code>" in errors
    runs = errors.split('class="errors-run"')[1:]
    assert len(runs) == 3
    for run in runs:
        assert run.count("<details>") <= 3


def test_unpriced_own_gpu_cost_is_not_measured_until_given_an_hourly_price(tmp_path: Path) -> None:
    build_store(tmp_path, local=True)
    html = render(tmp_path, tmp_path / "a.html")
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", section(html, "cost"), re.DOTALL) if 'class="who">internvl3<' in r)
    assert "not measured" in row and "badge base" in row  # a local run is the default baseline
    priced = render(tmp_path, tmp_path / "b.html", "--gpu-hourly", "2.5")
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", section(priced, "cost"), re.DOTALL) if 'class="who">internvl3<' in r)
    # 24 documents in 60 s on a 2.50/h GPU: 2.5 / 1440 docs per hour
    assert f"{2.5 / 1440:,.6f} USD" in row
    assert "--gpu-hourly 2.5" in section(priced, "cost")


def test_runs_and_baseline_select_what_is_reported(store_dir: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    results, ids = store_dir
    html = render(results, tmp_path / "r.html", "--runs", ids["nova-lite"][:12], "--baseline", ids["nova-pro"])
    prov = section(html, "provenance")
    assert ids["nova-lite"] in prov and ids["nova-pro"] in prov and ids["ocr-baseline"] not in prov
    assert "Baseline: nova-pro" in html


def test_main_fails_clearly_without_a_run_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--results", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.html")]) == 2
    assert "no run store" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()  # reading a report never creates a store


def test_unknown_run_is_a_clear_error(store_dir: tuple[Path, dict[str, str]], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--results", str(store_dir[0]), "--runs", "no-such-run", "--out", str(tmp_path / "r.html")]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err


def test_accuracy_section_shows_validation_rule_rates(tmp_path):
    import re

    from migbench.report import main as report_main

    results = tmp_path / "results"
    build_store(results)
    out = tmp_path / "r.html"
    assert report_main(["--results", str(results), "--out", str(out)]) == 0
    html = out.read_text()
    assert "Internal consistency of the extracted values" in html
    assert re.search(r"abn checksum", html)


def test_default_selection_skips_a_refused_run_and_lists_it_as_left_out(tmp_path: Path) -> None:
    from migbench.report import generate

    ids = build_store(tmp_path)
    ds = load_dataset(DATASET)
    with RunStore(tmp_path) as store:  # a later nova-pro attempt refused before any request: partial, 0 ok
        refused, _ = store.open_run(RunMeta(
            backend="nova-pro", family="bedrock", model="amazon.nova-pro-v1:0", config={"region": "us-east-1"},
            dataset_path=str(DATASET), dataset_hash=ds.hash, n_documents=len(ds.documents),
            prompt_hash="abc123def456", prompt_style="kv"))
        store.update_run(refused, status="partial")
    model = generate(tmp_path, tmp_path / "r.html")
    chosen = [v["run_id"] for v in model["runs"]]
    assert ids["nova-pro"] in chosen and refused not in chosen
    reasons = {x.run_id: x.reason for x in model["left_out"]}
    assert set(reasons) == {refused}
    assert "partial: 0 of 24 documents stored, 0 ok" in reasons[refused] and "not a candidate" in reasons[refused]
    decision = section((tmp_path / "r.html").read_text(encoding="utf-8"), "decision")
    assert refused in decision and "left out of this report" in decision
    explicit = generate(tmp_path, tmp_path / "e.html", runs=[refused])  # --run picks it anyway
    assert [v["run_id"] for v in explicit["runs"]] == [refused]


def test_a_run_the_suites_gated_keeps_its_thresholds_and_verdict_in_the_report(tmp_path: Path) -> None:
    import yaml
    from migbench.analysis import analyse
    from migbench.gates import load_threshold_set
    from migbench.report import generate

    ids = build_store(tmp_path)
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text(yaml.safe_dump({"name": "lenient", "accuracy": {"overall": 0.0, "critical": 0.0},
                                       "hallucination": {"max_rate": 1.0}, "failures": {"max_rate": 1.0}}))
    schema = load_schema()
    ts = load_threshold_set(lenient, schema)
    with RunStore(tmp_path) as store:
        ocr = ids["ocr-baseline"]
        judged = analyse(store.run(ocr), store.documents(ocr), ts, schema)
        assert judged.verdict == "pass"
        store.record_gating(ocr, {"thresholds": ts.record(), "verdict": judged.verdict, "at": "now",
                                  "tests": {"passed": 40, "failed": 0, "skipped": 3}, "failed_tests": []})
    model = generate(tmp_path, tmp_path / "r.html", runs=[ocr])
    (v,) = model["runs"]
    assert v["thresholds"]["file"] == "lenient.yaml" and v["thresholds"]["sha256"] == ts.sha256
    assert v["passes"] and v["gate_map"]["shared suites"].passed and v["second"] is None
    decision = section((tmp_path / "r.html").read_text(encoding="utf-8"), "decision")
    assert "lenient.yaml" in decision and "stored with the run by" in decision
    # the incumbent's thresholds asked for explicitly: shown beside, labelled, never replacing the verdict
    again = generate(tmp_path, tmp_path / "s.html", runs=[ocr], thresholds="incumbent")
    (v2,) = again["runs"]
    assert v2["passes"] and v2["second"]["verdict"] == "fail" and "thresholds.yaml" in v2["second"]["label"]
    assert "second threshold set" in section((tmp_path / "s.html").read_text(encoding="utf-8"), "decision")


def test_document_type_is_never_a_gate(store_dir: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    from migbench.doctable import IN_GT
    from migbench.report import generate

    model = generate(store_dir[0], tmp_path / "r.html")
    t = model["runs"][0]["analysis"].table
    j = t.fields.index("DOCUMENT_TYPE")
    assert ((t.field_flags[:, j] & IN_GT) != 0).all()  # every document's ground truth has it
    for v in model["runs"]:
        assert not [g for g in v["analysis"].gates if "DOCUMENT_TYPE" in g.gate_id], v["backend"]


def test_select_runs_prefers_complete_runs_with_results_per_backend_and_model() -> None:
    from migbench.contracts import RunRecord
    from migbench.report_data import select_runs

    def run(rid, backend, status, at, model="m", ds="h1"):
        return RunRecord(rid, backend, model=model, status=status, started_at=at, dataset_hash=ds, n_documents=4)

    runs = [run("ocr-1", "ocr", "complete", "1"), run("ocr-2", "ocr", "complete", "2"),
            run("nova-good", "nova", "complete", "3"), run("nova-403", "nova", "complete", "4"),
            run("nova-us", "nova", "partial", "5"), run("lite-fail", "lite", "complete", "6"),
            run("old-ds", "qwen", "complete", "0", ds="h0")]
    counts = {"ocr-1": {"ok": 4}, "ocr-2": {"ok": 3, "failed": 1}, "nova-good": {"ok": 4}, "nova-403": {"failed": 4},
              "nova-us": {}, "lite-fail": {"failed": 4}, "old-ds": {"ok": 4}}
    chosen, left = select_runs(runs, counts)
    assert [r.run_id for r in chosen] == ["ocr-2", "nova-good", "lite-fail"]  # lite: its only evidence
    why = {x.run_id: x.reason for x in left}
    assert set(why) == {"ocr-1", "nova-403", "nova-us", "old-ds"}
    assert "superseded by the later complete run ocr-2" in why["ocr-1"]
    assert "0 ok" in why["nova-403"] and "not a candidate" in why["nova-us"] and "another dataset" in why["old-ds"]


# ------------------------------------------------------------- next steps, links, scoring (issues 11, 13)
def test_no_recommendation_names_the_missing_evidence_and_the_exact_commands(report: str) -> None:
    decision = section(report, "decision")
    assert "What is missing, and the command that produces it" in decision
    # the emulated nova-lite has no live run: its own tox environment, on the same dataset
    assert f'<code class="cmd">tox -e nova-lite -- --live --dataset {DATASET}</code>' in decision
    # the baseline is the OCR floor, not the incumbent: import the incumbent's own results
    assert (f'<code class="cmd">migbench import PATH --format lmm-poc --name incumbent --dataset {DATASET}</code>'
            in decision)
    assert '<code class="cmd">migbench report --results ' in decision


def test_recommendation_lists_no_missing_evidence(tmp_path: Path) -> None:
    build_store(tmp_path, error_rates={"nova-pro": 0.0, "nova-lite": 0.0}, fail_one=False, hostile=False)
    decision = section(render(tmp_path, tmp_path / "a.html"), "decision")
    assert "Migrate to nova-pro" in decision and "What is missing" not in decision


def test_sources_are_links_when_they_are_urls_and_text_otherwise(report: str) -> None:
    cost = section(report, "cost")
    link = '<a href="https://aws.amazon.com/bedrock/pricing/" rel="noopener noreferrer">'
    assert link + "https://aws.amazon.com/bedrock/pricing/</a> : US list" in cost
    assert "<td class=\"src\">not priced: set --gpu-hourly or a pricing file with your own cost per GPU-hour</td>" in cost
    residency = section(report, "residency")  # the catalog's claims about the models called, sourced
    assert '<table class="catalog">' in residency and "<code>amazon.nova-pro-v1:0</code>" in residency
    assert '<a href="https://docs.aws.amazon.com/bedrock/latest/userguide/models-regions.html"' in residency


def test_linkify_escapes_everything_and_links_only_https_urls() -> None:
    from migbench.report import linkify

    out = str(linkify('see https://a.example/p?x=1&y="><script>alert(1)</script> or http://b.example, '
                      "and (https://c.example/d)."))
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert '<a href="https://a.example/p?x=1&amp;y=" rel="noopener noreferrer">' in out
    assert "http://b.example" in out and 'href="http://' not in out  # not https: stays text
    assert '<a href="https://c.example/d" rel="noopener noreferrer">https://c.example/d</a>).' in out
    assert str(linkify("seen in public code")) == "seen in public code"


def test_report_names_each_runs_scoring_profile_and_the_other_headline_without_writing(tmp_path: Path) -> None:
    from migbench.headline import headline_f1
    from migbench.report import generate

    ids = build_store(tmp_path)
    with RunStore(tmp_path) as store:
        store.set_scoring(ids["nova-pro"], "incumbent")
        # one response whose raw text the runner had to cut before parsing
        doc = store.documents(ids["nova-pro"])[0]
        doc.response.extra["raw_text_truncated"] = True
        store.save_result(ids["nova-pro"], doc, doc.ground_truth)
        before = {d.doc_id: d.doc_f1 for d in store.documents(ids["nova-pro"])}
    model = generate(tmp_path, tmp_path / "r.html")
    pro = next(v for v in model["runs"] if v["backend"] == "nova-pro")
    ocr = next(v for v in model["runs"] if v["backend"] == "ocr-baseline")
    assert pro["scoring"]["profile"] == "incumbent" and pro["scoring"]["truncated"] == 1
    assert ocr["scoring"]["profile"] is None and ocr["scoring"]["truncated"] == 0
    (exact,) = pro["scoring"]["others"]
    with RunStore(tmp_path) as store:
        rows = store.documents(ids["nova-pro"])
        assert {d.doc_id: d.doc_f1 for d in rows} == before and store.scoring(ids["nova-pro"]) == "incumbent"
    schema = load_schema()
    want = headline_f1([{"status": d.status, "doc_f1": document_f1(score_document(d.ground_truth, d.fields, schema,
                                                                                   "exact")) if d.status == "ok"
                         else None} for d in rows], "exact")
    assert exact == want and exact.n_failed == 1
    stored = pro["scoring"]["headline"]
    assert stored.median_excluded is not None and stored.mean_as_zero < stored.mean_excluded  # failed doc as 0
    acc = section((tmp_path / "r.html").read_text(encoding="utf-8"), "accuracy")
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", acc, re.DOTALL) if 'class="who">nova-pro<' in r
               and "<strong>incumbent</strong>" in r)
    assert f"<strong>exact</strong>: excluded mean {exact.mean_excluded:.3f}" in row
    assert f"{stored.median_excluded:.3f}" in row and "failed documents excluded" in acc
    ocr_row = next(r for r in re.findall(r"<tr>(.*?)</tr>", acc, re.DOTALL) if 'class="who">ocr-baseline<' in r
                   and "not recorded" in r)
    assert "<strong>incumbent</strong>: excluded mean" in ocr_row and "<strong>exact</strong>" in ocr_row


def test_an_imported_incumbent_run_is_selected_and_becomes_the_default_baseline() -> None:
    from migbench.contracts import RunRecord
    from migbench.report_data import default_baseline, select_runs

    ocr = RunRecord("ocr-1", "ocr-baseline", "ocr", "rapidocr", status="complete", dataset_hash="d", started_at="1")
    imp = RunRecord("imp-1", "imported", "incumbent", "internvl3.5", status="done", dataset_hash="d", started_at="2",
                    config={"imported": True, "name": "incumbent"})
    other = RunRecord("imp-2", "imported", "vendor-x", "internvl3.5", status="done", dataset_hash="d",
                      started_at="3", config={"imported": True, "name": "vendor-x"})
    counts = {r: {"ok": 3} for r in ("ocr-1", "imp-1", "imp-2")}
    chosen, left = select_runs([ocr, imp, other], counts)
    assert [r.run_id for r in chosen] == ["ocr-1", "imp-1", "imp-2"] and not left  # two imported systems, both kept
    assert default_baseline(chosen) == "imp-1"


def test_trade_off_caption_describes_only_what_is_drawn() -> None:
    from types import SimpleNamespace

    from migbench.report_data import trade_off_caption

    def view(label: str, cost: float | None, f1: float, emulated: bool = False) -> dict:
        return {"label": label, "emulated": emulated, "latency": {"p95": 1.0}, "cost": SimpleNamespace(per_doc=cost),
                "summary": SimpleNamespace(overall_failed_as_zero=SimpleNamespace(mean=f1))}

    alone = trade_off_caption([view("ocr", 0.0, 0.9), view("nova-pro", 0.002, 0.8), view("emu", 0.001, 1.0, True)])
    assert "Dashed" not in alone and "ocr alone is on the cost/accuracy frontier" in alone
    assert "Cost 0 (ocr)" in alone and "Hollow grey markers are emulated" in alone
    both = trade_off_caption([view("ocr", 0.0, 0.6), view("nova-pro", 0.002, 0.8), view("gpu", None, 0.7)])
    assert "Dashed staircase: the cost/accuracy frontier among real runs (ocr, nova-pro)" in both
    assert "Left out (cost not measured): gpu." in both and "Hollow" not in both


def test_only_a_baseline_asks_for_a_live_migration_target(store_dir: tuple[Path, dict[str, str]],
                                                          tmp_path: Path) -> None:
    results, ids = store_dir
    decision = section(render(results, tmp_path / "o.html", "--runs", ids["ocr-baseline"]), "decision")
    assert "only the baseline was measured" in decision
    assert f'<code class="cmd">tox -e au-nova-lite -- --live --dataset {DATASET}</code>' in decision


def test_residency_section_calls_out_a_widened_policy_an_unverified_profile_and_backend_warnings(tmp_path: Path) -> None:
    from migbench.residency import load_policy

    ids = build_store(tmp_path)
    facts = load_policy().with_destinations(["ap-southeast-6"]).describe()  # what a widened run records
    with RunStore(tmp_path) as store:
        store.update_run(ids["nova-pro"], describe={
            "backend": "nova-pro", "model": "amazon.nova-pro-v1:0", "residency": facts,
            "profile_unverified_accepted": True, "warnings": ["plain http to a non-loopback server"]})
    html = section(render(tmp_path, tmp_path / "r.html"), "residency")
    note = next(line for line in html.splitlines() if "widened by the user" in line)
    assert "ap-southeast-6" in note and "outside Australia" in note
    assert "accepted unverified" in note and "plain http to a non-loopback server" in note
    assert "widened" not in html.replace(note, "")  # the other runs recorded no such facts
