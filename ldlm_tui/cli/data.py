"""``ldlm data inspect``."""

from __future__ import annotations

from typing import Any

import typer

from .common import (
    _dump_json,
    _engine,
    _epilog,
    _out,
    data_app,
)

# --------------------------------------------------------------------------- data


@data_app.command(
    "inspect",
    epilog=_epilog(
        "Examples:\n\n  ldlm data inspect my.txt\n  ldlm data inspect ./texts/ --json\n"
        "  ldlm data inspect builtin --seq-len 256\n"
    ),
)
def data_inspect(
    spec: str = typer.Argument(
        ..., metavar="PATH|NAME", help="File, folder of .txt files, 'builtin' or a named corpus."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    seq_len: int | None = typer.Option(
        None, "--seq-len", help="Sequence length for the split check (default: 128)."
    ),
    bpe_vocab_size: int | None = typer.Option(
        None, "--bpe-vocab-size", help="BPE vocabulary size (default: 2048)."
    ),
    max_corpus_mb: int | None = typer.Option(
        None, "--max-corpus-mb", metavar="MIB", help="Largest corpus read (default 1024)."
    ),
) -> None:
    """Size, characters, vocabulary and token counts per tokenizer, and split sizes."""
    E = _engine()
    cfg = E.RunConfig()
    if seq_len is not None:
        cfg.model.seq_len = seq_len
    if bpe_vocab_size is not None:
        cfg.data.bpe_vocab_size = bpe_vocab_size
    if max_corpus_mb is not None:
        cfg.data.max_corpus_mb = max_corpus_mb
    cfg.validate()
    corpus = E.load_corpus(spec, max_mb=cfg.data.max_corpus_mb)
    text = corpus.text
    nbytes = len(text.encode("utf-8"))
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    info: dict[str, Any] = {
        "name": corpus.name,
        "source": corpus.source,
        "bytes": nbytes,
        "chars": len(text),
        "lines": lines,
        "distinct_chars": len(set(text)),
        "seq_len": cfg.model.seq_len,
        "val_fraction": cfg.data.val_fraction,
        "tokenizers": {},
    }
    for kind in ("char", "word", "bpe"):
        cfg.data.tokenizer = kind
        tok = E.build_tokenizer(
            kind, text, vocab_size=cfg.data.bpe_vocab_size, min_count=cfg.data.word_min_count
        )
        row: dict[str, Any] = {"vocab_size": tok.vocab_size}
        try:
            _, splits = E.prepare_data(cfg, tok, text)
            n = int(splits.train.numel() + splits.val.numel())
            row.update(
                tokens=n,
                train_tokens=int(splits.train.numel()),
                val_tokens=int(splits.val.numel()),
                fits=True,
            )
        except E.DataError as e:
            n = int(tok.encode_array(text).size)
            row.update(tokens=n, train_tokens=None, val_tokens=None, fits=False, error=str(e))
        row["chars_per_token"] = len(text) / n if n else 0.0
        info["tokenizers"][kind] = row
    if json_out:
        _dump_json(info)
        return
    _out(f"{corpus.name}  ({corpus.source})")
    _out(
        f"  {nbytes:,} bytes · {len(text):,} chars · {lines:,} lines · "
        f"{info['distinct_chars']:,} distinct characters"
    )
    _out(f"  split for seq_len {cfg.model.seq_len}, {cfg.data.val_fraction:.0%} held out:")
    header = ("tokenizer", "vocab", "tokens", "chars/token", "train", "val")
    rows = []
    for kind, r in info["tokenizers"].items():
        rows.append(
            (
                kind,
                f"{r['vocab_size']:,}",
                f"{r['tokens']:,}",
                f"{r['chars_per_token']:.2f}",
                f"{r['train_tokens']:,}" if r["fits"] else "too short",
                f"{r['val_tokens']:,}" if r["fits"] else "-",
            )
        )
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(header)]
    for r in (header, *rows):
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        _out("  " + "  ".join(cells))
    for kind, r in info["tokenizers"].items():
        if not r["fits"]:
            _out(f"  {kind}: {r['error']}")
