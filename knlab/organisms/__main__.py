"""python -m knlab.world build | train gpt|bert [--steps N] | measure gpt|bert"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m knlab.world", description="Build the world corpus, train and measure the shipped models.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the training corpus (JSON lines) from the fact base")
    b.add_argument("--out", type=Path, default=None)
    b.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train", help="train world-gpt or world-bert")
    t.add_argument("kind", choices=["gpt", "bert"])
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--out", type=Path, default=None)
    t.add_argument("--no-measure", action="store_true")
    m = sub.add_parser("measure", help="measure a shipped model and write its model card")
    m.add_argument("kind", choices=["gpt", "bert"])
    m.add_argument("--model", type=Path, default=None)
    args = ap.parse_args(argv)

    if args.cmd == "build":
        from knlab.organisms.train import BUILD_DIR
        from knlab.world.corpus import write_corpus
        out = args.out or BUILD_DIR / "corpus.jsonl"
        n = write_corpus(out, args.seed)
        print(f"wrote {n} documents to {out}")
        return 0
    if args.cmd == "train":
        from knlab.organisms.train import train
        out = train(args.kind, args.out, args.steps, log=lambda s: print(s, flush=True))
        if not args.no_measure:
            from knlab.organisms.card import write_card
            write_card(args.kind, out, log=lambda s: print(s, flush=True))
        return 0
    if args.cmd == "measure":
        from knlab.organisms.card import write_card
        from knlab.organisms.train import MODELS_DIR, model_name
        write_card(args.kind, args.model or MODELS_DIR / model_name(args.kind), log=lambda s: print(s, flush=True))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
