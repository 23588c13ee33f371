"""The `migbench` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from migbench.contracts import MigbenchError, UsageError, exit_code_for
from rich.console import Console
from rich.markup import escape
from rich.table import Table

DEFAULT_RESULTS = "results"
PROFILES = ("incumbent", "exact")  # ground_truth/scoring_profiles.yaml (checked again when loaded)
console = Console(stderr=True, soft_wrap=True)


def _store(args: argparse.Namespace):
    from migbench.store import RunStore
    return RunStore(args.results)


def _existing_store(args: argparse.Namespace):
    """The store under --results for commands that read runs: a mistyped folder is one line, never a
    new empty store (which would then answer "no runs")."""
    from migbench.store import DB_NAME, RunStore

    opener = getattr(RunStore, "open_existing", None)  # the store's own check, where it has one
    if opener is not None:
        return opener(args.results)
    path = Path(args.results) / DB_NAME
    if not path.is_file():
        raise UsageError(f"--results {args.results}: no migbench run store there (no {DB_NAME}); "
                         "pass the folder `migbench run` wrote to (default ./results, or MIGBENCH_RESULTS)")
    return RunStore(args.results)


# run -------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from migbench.options import apply_scoring, backend_options, check_limit, check_positive, resolve_dataset
    from migbench.progress import run_progress, summary_table
    from migbench.registry import create_backend
    from migbench.runner import Runner, RunOptions

    # The same option handling as `pytest suites` (migbench.options): one meaning, one error line.
    options = backend_options(args.option, "--option", **{
        key: getattr(args, key, None) for key in ("region", "endpoint_url", "concurrency", "batch_size",
                                                  "endpoint_name", "instance_type", "api", "max_image_dim",
                                                  "stream")})
    check_limit(args.limit)
    for flag, value, integer in (("--concurrency", args.concurrency, True), ("--batch-size", args.batch_size, True),
                                 ("--max-image-dim", args.max_image_dim, True), ("--tpm", args.tpm, False),
                                 ("--rpm", args.rpm, False)):
        check_positive(flag, value, integer=integer)
    from migbench.residency import loopback_allowed_by_env

    if args.allow_loopback or loopback_allowed_by_env():
        options["allow_loopback"] = True
    backend = create_backend(args.backend, model=args.model_path or args.model, options=options)
    from migbench.options import resolve_schema

    schema = resolve_schema(args.schema, warn=lambda line: console.print(f"[yellow]warning:[/] {line}"))
    dataset = resolve_dataset(args.dataset, ground_truth=args.ground_truth, doc_type=args.doc_type,
                              encoding=args.gt_encoding, schema=schema)
    if dataset.problems:
        console.print(f"[yellow]{len(dataset.problems)} dataset problem(s): each is recorded as a failed "
                      f"document[/] (first: {dataset.problems[0].message})")
    opts = RunOptions(prompt_style=args.prompt_style, prompt_family=args.prompt_family, limit=args.limit,
                      concurrency=args.concurrency, batch_size=args.batch_size, tokens_per_min=args.tpm,
                      requests_per_min=args.rpm, new_run=args.new, retry_failed=args.retry_failed,
                      max_image_dim=args.max_image_dim, classify=args.classify)
    store = _store(args)
    try:
        with run_progress(console, args.backend) as prog:
            runner = Runner(backend, dataset, store, opts, schema=schema, on_result=prog.on_result,
                            on_start=prog.on_start)
            summary = runner.run()
    finally:
        backend.close()
    profile = apply_scoring(store, summary.run_id, args.scoring, redone=summary.done_now, schema=schema)
    run = store.run(summary.run_id)
    # Read a chunk at a time (and without raw answers) on each pass: a run may hold a million documents.
    docs = store.stream_documents(summary.run_id, raw_text=False)
    console.print(summary_table(summary, args.backend, emulated=run.emulated, run_docs=docs, profile=profile))
    from migbench.classify import classification_line

    console.print(classification_line(run, docs, schema))
    print(summary.run_id)
    return (exit_code_for(summary.interrupt) or 130) if summary.interrupted else 0


# runs / backends ----------------------------------------------------------------
def cmd_runs(args: argparse.Namespace) -> int:
    store = _existing_store(args)
    runs = store.runs()
    t = Table(title=f"runs in {store.path}")
    # Run ids are what rescore/export/--run take: never cut, whatever the terminal width; the other
    # columns wrap instead.
    t.add_column("run", no_wrap=True, min_width=max((len(r.run_id) for r in runs), default=3))
    for col in ("backend", "model", "status", "docs", "ok", "failed", "emulated", "started"):
        t.add_column(col, overflow="fold")
    for r in runs:
        c = store.counts(r.run_id)
        t.add_row(r.run_id, r.backend, str(r.model), r.status, str(r.n_documents),
                  str(c.get("ok", 0)), str(c.get("failed", 0)), "yes" if r.emulated else "", r.started_at)
    Console().print(t)
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    from migbench.registry import entry, missing_modules, registry

    t = Table(title="backends")
    for col in ("name", "extra", "installed", "description"):
        t.add_column(col)
    for name in registry().backends:
        miss = missing_modules(name)
        t.add_row(name, entry(name).extra, "yes" if not miss else f"no (pip install 'migbench[{entry(name).extra}]')",
                  entry(name).description)
    Console().print(t)
    return 0


# parse / rescore / export --------------------------------------------------------
def cmd_parse(args: argparse.Namespace) -> int:
    from migbench.parsing import parse_output
    from migbench.schema import load_schema

    known = sorted(load_schema().document_types)
    if args.doc_type not in known:
        raise UsageError(f"--doc-type: unknown document type {args.doc_type!r}; known: {', '.join(known)}")
    data = sys.stdin.buffer.read()
    text = data.decode("utf-8", errors="replace")
    out = json.dumps(parse_output(text, args.doc_type), indent=2, ensure_ascii=False) + "\n"
    # Bytes, not print(): a value the terminal's encoding cannot show is escaped, never a crash.
    _write_stdout(out.encode("utf-8", errors="backslashreplace"))
    return 0


def _write_stdout(data: bytes) -> None:
    """Write to stdout; a reader that went away (`| head -3`) ends the output quietly."""
    try:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not raise again
        # (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def cmd_rescore(args: argparse.Namespace) -> int:
    from migbench.headline import headline_f1
    from migbench.rescore import rescore_run

    store = _existing_store(args)
    run_id = store.resolve(args.run)
    from migbench.options import resolve_schema

    schema = resolve_schema(args.schema, warn=lambda line: console.print(f"[yellow]warning:[/] {line}"))
    profile, n, _ = rescore_run(store, run_id, args.scoring, schema)
    emulated = " [EMULATED]" if store.run(run_id).emulated else ""
    console.print(f"rescored {n} documents of {run_id}{emulated} from stored raw responses ({profile} scoring)")
    for line in headline_f1(store.stream_documents(run_id, raw_text=False), profile).lines():
        console.print(line)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from migbench.export import export_run

    store = _existing_store(args)
    run = store.run(args.run)
    if args.format == "lmm-poc":  # the incumbent's artifact shapes (migbench.lmm_poc)
        from migbench.lmm_poc import write_lmm_poc

        raw, cleaned = write_lmm_poc(run, store.stream_documents(run.run_id), Path(args.out))
        console.print(f"wrote {raw} and {cleaned}")
        return 0
    out, scores = export_run(run, store.stream_documents(run.run_id), Path(args.out))
    console.print(f"wrote {out} and {scores}")
    return 0


# Subcommands owned by other modules parse their own arguments: func(argv) -> exit code.
PLUGGABLE = {
    "emulator": ("migbench.cli_aws", "cmd_emulator", "serve the local Bedrock emulator (synthetic answers)"),
    "iam-policy": ("migbench.cli_aws", "cmd_iam_policy", "write a least-privilege IAM policy"),
    "catalog": ("migbench.cli_aws", "cmd_catalog", "refresh the model catalog from the Bedrock API (credentials)"),
    "report": ("migbench.report", "main", "render the HTML migration report"),
    "generate": ("migbench.fixtures.generate", "main", "generate a synthetic corpus"),
    "import": ("migbench.lmm_poc", "main", "store a run from the incumbent's artifacts or a predictions file"),
    "plan": ("migbench.planning", "main", "documents needed to show non-inferiority at a margin, per type"),
    "compare": ("migbench.compare", "main", "paired comparison of two runs: differences, changed documents"),
    "batch": ("migbench.cli_batch", "main", "Bedrock batch inference: submit, status, collect, stop (S3 + job)"),
    "sagemaker": ("migbench.cli_sagemaker", "main", "SageMaker endpoints: deploy (LMI/vLLM), delete, status"),
}


def _run_pluggable(name: str, argv: list[str]) -> int:
    import importlib

    module, func, _ = PLUGGABLE[name]
    return getattr(importlib.import_module(module), func)(argv) or 0


def _backend_names() -> str:
    """Backend names from the registry's catalog (backends.yaml): no adapter is imported."""
    try:
        from migbench.registry import registry

        return ", ".join(registry().backends)
    except MigbenchError as exc:  # a broken catalog must not break `--help`; `run` reports it properly
        return f"(backend catalog unreadable: {exc})"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="migbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def with_results(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--results", default=os.environ.get("MIGBENCH_RESULTS", DEFAULT_RESULTS),
                        help="results directory holding the run store (default: ./results)")
        return sp

    r = with_results(sub.add_parser("run", help="run a backend over a dataset (resumable)"))
    r.add_argument("--backend", default="ocr-baseline", metavar="NAME",
                   help=f"backend to run (default: ocr-baseline): {_backend_names()}; see `migbench backends`")
    r.add_argument("--dataset", help="folder with documents + ground_truth.csv/.jsonl (default: shipped synthetic set)")
    r.add_argument("--limit", type=int, metavar="N",
                   help="only the first N documents of the dataset (a later run with a larger N resumes)")
    r.add_argument("--model", help="model / profile id or endpoint name (overrides the catalog)")
    r.add_argument("--model-path", help="local model directory (local backends)")
    r.add_argument("--region", help="AWS region (must be an allowed Australian region)")
    r.add_argument("--endpoint-url", help="service endpoint (else AWS_ENDPOINT_URL_* or the AWS default)")
    r.add_argument("--endpoint-name", help="SageMaker endpoint name")
    r.add_argument("--instance-type", help="SageMaker instance type, for cost")
    r.add_argument("--api", choices=["converse", "invoke-nova", "invoke-anthropic"])
    r.add_argument("--stream", action="store_true", default=None,
                   help="bedrock: ConverseStream / InvokeModelWithResponseStream, measuring time to first token "
                        "and output tokens per second (same as -o stream=true; pytest suites: --backend-option "
                        "stream=true)")
    r.add_argument("--allow-loopback", action="store_true",
                   help="allow a 127.0.0.1 endpoint (emulators); also MIGBENCH_ALLOW_LOOPBACK=1")
    r.add_argument("--concurrency", type=int)
    r.add_argument("--batch-size", type=int)
    r.add_argument("--tpm", type=float, help="tokens per minute quota to stay under")
    r.add_argument("--rpm", type=float, help="requests per minute quota to stay under")
    r.add_argument("--prompt-style", default="kv", choices=["kv", "json", "tool"],
                   help="answer format: kv lines, a JSON object, or tool: a forced tool call whose input is the "
                        "fields (structured output; Bedrock Converse only)")
    r.add_argument("--prompt-family")
    r.add_argument("--max-image-dim", type=int)
    r.add_argument("--doc-type", help="document type for rows without DOCUMENT_TYPE")
    r.add_argument("--ground-truth", metavar="FILE",
                   help="ground truth CSV/JSONL kept outside the dataset folder (default: DIR/ground_truth.csv)")
    r.add_argument("--gt-encoding", help="ground truth encoding if not UTF-8")
    r.add_argument("--new", action="store_true", help="start a new run even if the same run exists")
    r.add_argument("--retry-failed", action="store_true", help="redo documents that failed last time")
    r.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="backend option (repeatable), e.g. -o read_timeout=600")
    r.add_argument("--scoring", choices=PROFILES, help="scoring profile (default: incumbent)")
    r.add_argument("--classify", action="store_true",
                   help="ask the backend each document's type first and extract with that type's prompt "
                        "(the incumbent's pipeline; DOCUMENT_TYPE is then scored). Default: the type is given")
    r.add_argument("--schema", metavar="FILE",
                   help="field schema: migbench's fields.yaml format or the incumbent's field_definitions.yaml")
    r.set_defaults(func=cmd_run)

    sub.add_parser("backends", help="list backends and whether their extra is installed").set_defaults(func=cmd_backends)
    with_results(sub.add_parser("runs", help="list stored runs")).set_defaults(func=cmd_runs)

    pa = sub.add_parser("parse", help="parse raw model text from stdin into fields (JSON)")
    pa.add_argument("--doc-type", required=True, help="document type: invoice, receipt or bank_statement "
                    "(the schema's types, checked when run)")
    pa.set_defaults(func=cmd_parse)

    rs = with_results(sub.add_parser("rescore", help="re-parse and re-score stored raw responses"))
    rs.add_argument("run", help="run id or 'latest'")
    rs.add_argument("--scoring", choices=PROFILES,
                    help="scoring profile (default: the run's own, else incumbent); no model is called")
    rs.add_argument("--schema", metavar="FILE",
                    help="field schema the run was scored with (migbench's format or the incumbent's)")
    rs.set_defaults(func=cmd_rescore)

    ex = with_results(sub.add_parser("export", help="write predictions in the ground truth's format"))
    ex.add_argument("run", help="run id or 'latest'")
    ex.add_argument("--out", required=True,
                    help="output .csv or .jsonl (scores written beside); with --format lmm-poc, a folder")
    ex.add_argument("--format", choices=["ground-truth", "lmm-poc"], default="ground-truth",
                    help="lmm-poc: raw_extractions.jsonl + cleaned_extractions.jsonl for the incumbent's stages")
    ex.set_defaults(func=cmd_export)

    for name, (_, _, helptext) in PLUGGABLE.items():
        sub.add_parser(name, help=helptext, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in PLUGGABLE:
            return _run_pluggable(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args) or 0
    except (MigbenchError, KeyboardInterrupt) as exc:
        code = exit_code_for(exc)
        if isinstance(exc, KeyboardInterrupt):
            console.print("[yellow]interrupted[/]")
        else:
            # Escaped: messages name extras and options in brackets (pip install 'migbench[vllm]').
            console.print(f"[red]error:[/] {escape(str(exc))}")
        return code if code is not None else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
