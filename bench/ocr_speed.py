"""Speed of the offline baseline, side by side in one run: seconds per receipt image (OCR) and per
text-layer PDF page (no OCR), through the same Runner path `migbench run --backend ocr-baseline` uses.

The documents are generated here (the same receipts as images and as born-digital PDFs), so the
two figures come from the same content. Goals (issue: the offline baseline beyond its receipts):
at most 2 s per receipt image and 0.3 s per text-layer page on 2 cores.

    python bench/ocr_speed.py --n 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from migbench.datasets import load_dataset
from migbench.fixtures.generate import generate_corpus
from migbench.registry import create_backend
from migbench.runner import Runner, RunOptions
from migbench.store import RunStore


def timed_run(dataset_dir: Path, results: Path) -> tuple[float, float, int, float | None]:
    """(wall s, cpu s, documents, mean F1) of one OCR run over the folder."""
    ds = load_dataset(dataset_dir)
    backend = create_backend("ocr-baseline")
    store = RunStore(results)
    c0, w0 = time.process_time(), time.perf_counter()
    summary = Runner(backend, ds, store, RunOptions(concurrency=1)).run()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    f1 = [d.doc_f1 for d in store.documents(summary.run_id) if d.ok]
    store.close()
    backend.close()
    assert summary.ok == len(ds), summary
    return wall, cpu, len(ds), (sum(f1) / len(f1) if f1 else None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="receipts of each kind")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = []
        for kind, pdf in (("receipt image (OCR)", None), ("text-layer PDF page", "text")):
            folder = root / (pdf or "image")
            generate_corpus(folder, n=args.n, seed=args.seed, doc_types=["receipt"], tiers=["clean"], pdf=pdf)
            rows.append((kind, *timed_run(folder, root / f"results-{pdf or 'image'}")))
    print(f"{'kind':<22}{'docs':>6}{'wall s/doc':>12}{'cpu s/doc':>11}{'mean F1':>9}")
    for kind, wall, cpu, n, f1 in rows:
        print(f"{kind:<22}{n:>6}{wall / n:>12.2f}{cpu / n:>11.2f}{(f1 if f1 is not None else float('nan')):>9.3f}")
    (_, iw, _, n_i, _), (_, pw, _, n_p, _) = rows
    print(f"ocr_speed: s_per_receipt_image={iw / n_i:.2f} s_per_text_pdf_page={pw / n_p:.3f} "
          f"ratio={iw / n_i / max(pw / n_p, 1e-9):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
