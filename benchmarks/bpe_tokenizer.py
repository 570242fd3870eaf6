"""Benchmark: byte-level BPE (``companion.tokenizers``) trained on the whole of tiny-shakespeare.

Targets: training to a vocabulary of 512 or 1024 tokens takes a few seconds on one core;
encoding the whole corpus takes about a second. Reported for each vocabulary size: training
time (wall clock and CPU), encoding time, tokens, and bytes per token (the compression). If
Hugging Face's ``tokenizers`` is installed, its byte-level BPE (same split, same vocabulary
size) is trained too and its token count printed beside ours: the counts agree, the merge lists
differ only where two pairs are equally frequent (the two break ties by different ids).

Usage::

    .venv/bin/python benchmarks/bpe_tokenizer.py [--vocab-sizes 512 1024] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from companion.data import load_shakespeare
from companion.tokenizers import train_bpe


def hf_token_count(text: str, vocab_size: int) -> int | None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    except ImportError:
        return None
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.train_from_iterator([text], trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return len(hf.encode(text).ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    text = load_shakespeare()
    n_bytes = len(text.encode("utf-8"))
    rows = []
    for vocab_size in args.vocab_sizes:
        wall, cpu = time.perf_counter(), time.process_time()
        tok = train_bpe(text, vocab_size)
        train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
        wall = time.perf_counter()
        ids = tok.encode(text)
        encode_wall = time.perf_counter() - wall
        assert tok.decode(ids) == text
        row = {"vocab_size": vocab_size, "train_s": round(train_wall, 2), "train_cpu_s": round(train_cpu, 2),
               "encode_s": round(encode_wall, 2), "tokens": len(ids), "bytes_per_token": round(n_bytes / len(ids), 3),
               "hf_tokens": hf_token_count(text, vocab_size)}
        rows.append(row)
        print(f"vocab {vocab_size}: train {train_wall:.2f} s ({train_cpu:.2f} s CPU), encode {encode_wall:.2f} s, "
              f"{len(ids):,} tokens, {n_bytes / len(ids):.3f} bytes/token; Hugging Face: {row['hf_tokens']} tokens")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"corpus_bytes": n_bytes, "results": rows, "load_average": os.getloadavg()}, f, indent=2)


if __name__ == "__main__":
    main()
