"""Token-aware splitting of parsed documents into overlapping chunks.

Sections are split one at a time (parsers already cut Markdown/HTML at headings and PDFs at
pages), so each chunk carries exactly the heading path and page of its section; chunks never
span two sections. Splitting is done by ``semantic-text-splitter`` (Rust), which fills a chunk
with the largest semantic units (paragraphs, then sentences, then words) that fit the token
capacity, and carries up to ``overlap`` tokens of whole units into the next chunk. A chunk is also
never longer than ``MAX_CHARS_PER_TOKEN`` characters per token of capacity, for text the tokenizer
counts as next to nothing.

Offsets: ``Chunk.char_start``/``char_end`` index into :func:`full_text` of the document, which is
the section texts joined with ``"\\n\\n"``; ``full_text(doc)[c.char_start:c.char_end] == c.text``.
"""

from __future__ import annotations

import math

import tokenizers
from semantic_text_splitter import MarkdownSplitter, TextSplitter

from docmill.config import ChunkingConfig
from docmill.embedders.base import untruncated_copy
from docmill.models import Chunk, ParsedDocument, Section

SECTION_SEPARATOR = "\n\n"
#: Documents whose text is Markdown (a notebook is read as one), split with the Markdown-aware splitter.
MARKDOWN_MIMES = frozenset({"text/markdown", "application/x-ipynb+json"})
HEADING_SEPARATOR = " > "
#: Between the heading prefix and the chunk text in ``embed_text``.
PREFIX_SEPARATOR = "\n\n"
#: [CLS] and [SEP] (or the model's equivalents) that every model input carries.
SPECIAL_TOKENS = 2
#: Without a tokenizer (HTTP providers) a token is taken to be about this many characters.
CHARS_PER_TOKEN = 4
#: No chunk holds more than capacity x this many characters, whatever the tokenizer counts: it makes
#: one [UNK] of any word over 100 characters, so 32,000 characters without a space were "one token".
#: Prose averages 4-5 characters a token, so the cap only binds on such text.
MAX_CHARS_PER_TOKEN = 12
#: A heading prefix may take at most this share of the model's input; longer ones are cut, so
#: a pathological heading path cannot squeeze the chunk text down to nothing.
MAX_PREFIX_SHARE = 4

#: semantic-text-splitter slows down more than linearly on long text without paragraph breaks (a
#: 10 MB single line took 469 s, 1.6 MB 16 s); cut into windows of this size it stays linear, at
#: the price of chunk overlap across window edges, which are paragraph breaks where there are any.
WINDOW_CHARS = 32_000

_PREFIX_CACHE_SIZE = 4096

_Splitter = TextSplitter | MarkdownSplitter


def windows(text: str, size: int = WINDOW_CHARS) -> list[tuple[int, str]]:
    """``text`` as consecutive (offset, slice) windows of at most ``size`` characters, each cut at
    the last paragraph break, else line break, else sentence end, else space before the limit."""
    out: list[tuple[int, str]] = []
    start = 0
    while len(text) - start > size:
        limit = start + size
        cut = -1
        for mark in ("\n\n", "\n", ". ", " "):
            found = text.rfind(mark, start + size // 2, limit)
            if found != -1:
                cut = found + len(mark)
                break
        end = cut if cut != -1 else limit
        out.append((start, text[start:end]))
        start = end
    out.append((start, text[start:]))
    return out


def full_text(doc: ParsedDocument) -> str:
    """The document's text as chunk offsets see it: section texts joined with a blank line."""
    return SECTION_SEPARATOR.join(section.text for section in doc.sections)


class Chunker:
    """Splits a :class:`ParsedDocument` into :class:`Chunk` objects sized for one model.

    ``tokenizer`` is the embedding model's tokenizer (any truncation or padding on it is ignored:
    a copy without them is used); with ``None`` sizes are estimated as
    ``CHARS_PER_TOKEN`` characters per token. ``max_model_tokens`` is the longest input the model
    accepts, special tokens included.

    Sizing rules, per chunk: the chunk text has at most ``cfg.max_tokens`` tokens, and
    ``embed_text`` (heading prefix + text, plus the special tokens) has at most
    ``max_model_tokens``; the prefix's tokens are reserved from the text's capacity for that.
    """

    def __init__(self, cfg: ChunkingConfig, tokenizer: tokenizers.Tokenizer | None,
                 max_model_tokens: int) -> None:
        self._cfg = cfg
        self._max_model_tokens = max_model_tokens
        self._input_budget = max_model_tokens - SPECIAL_TOKENS
        if self._input_budget < 4:
            raise ValueError(f"max_model_tokens {max_model_tokens} leaves no room for text")
        self._max_prefix_tokens = self._input_budget // MAX_PREFIX_SHARE
        self._tokenizer = tokenizer
        if tokenizer is not None and (tokenizer.truncation is not None or tokenizer.padding is not None):
            # A copy: the caller's tokenizer may be the embedder's own, which must keep truncating.
            # (Embedders hand out an untruncated one already, used as it is: a copy costs ~20 ms.)
            self._tokenizer = untruncated_copy(tokenizer)
        # Building a splitter from a tokenizer costs ~30 ms; sections share a handful of capacities.
        self._splitters: dict[tuple[bool, int, int, int | None], _Splitter] = {}
        self._prefixes: dict[tuple[str, ...], tuple[str, int]] = {}

    def chunk(self, doc: ParsedDocument) -> list[Chunk]:
        """Chunks of ``doc`` in reading order, ordinals 0..n-1; blank sections give no chunks."""
        markdown = doc.mime in MARKDOWN_MIMES
        plans: list[tuple[int, Section, str, tuple[bool, int, int]]] = []
        base = 0  # offset of the current section in full_text(doc)
        for section in doc.sections:
            if section.text.strip():
                prefix, prefix_tokens = self._prefix(section.heading_path)
                capacity = min(self._cfg.max_tokens, self._input_budget - prefix_tokens)
                # The configured overlap fits the configured size; a capacity shrunk by a long
                # heading prefix may be smaller than it, which the splitter rejects.
                overlap = self._cfg.overlap if self._cfg.overlap < capacity else capacity // 2
                plans.append((base, section, prefix, (markdown, capacity, overlap)))
            base += len(section.text) + len(SECTION_SEPARATOR)
        # A section that fits its capacity is one chunk as it stands: counting its tokens once is
        # all the sizing it needs. Only longer sections go through the splitter, which measures
        # its candidate pieces over and over (the larger part of chunking time when run on all).
        whole = self._fitting(plans)
        splits: list[list[tuple[int, str, int | None]]] = [[] for _ in plans]
        for i, count in whole.items():
            text = plans[i][1].text
            stripped = text.lstrip()
            splits[i] = [(len(text) - len(stripped), stripped.rstrip(), count)]
        # The windows (see WINDOW_CHARS) of all sections sharing a splitter go to one
        # chunk_all_indices call: the Rust side splits them in parallel (about 2x on 2 cores).
        for key in dict.fromkeys(plan[3] for i, plan in enumerate(plans) if i not in whole):
            members = [(i, start, window) for i, plan in enumerate(plans) if plan[3] == key and i not in whole
                       for start, window in windows(plan[1].text)]
            results = self._splitter(*key).chunk_all_indices([window for _, _, window in members])
            for (i, window_start, _), result in zip(members, results, strict=True):
                for start, text in result:
                    if len(text) > key[1] * MAX_CHARS_PER_TOKEN:
                        splits[i] += self._cut_long(key, window_start + start, text)
                    elif text.strip():
                        splits[i].append((window_start + start, text, None))
        pieces = [(offset + start, text, count, prefix, section.heading_path, section.page)
                  for (offset, section, prefix, _), split in zip(plans, splits, strict=True)
                  for start, text, count in split]
        unknown = [i for i, piece in enumerate(pieces) if piece[2] is None]
        counts = [piece[2] or 0 for piece in pieces]
        for i, count in zip(unknown, self._count_many([pieces[i][1] for i in unknown]), strict=True):
            counts[i] = count
        return [
            Chunk(ordinal=ordinal, text=text,
                  embed_text=f"{prefix}{PREFIX_SEPARATOR}{text}" if prefix else text,
                  heading_path=heading_path, page=page,
                  char_start=start, char_end=start + len(text), token_count=count)
            for ordinal, ((start, text, _, prefix, heading_path, page), count) in enumerate(zip(pieces, counts,
                                                                                               strict=True))
        ]

    def _cut_long(self, key: tuple[bool, int, int], start: int, text: str) -> list[tuple[int, str, int | None]]:
        """(offset, text, tokens) of a chunk over MAX_CHARS_PER_TOKEN cut again by characters; a piece
        that then counts more tokens than fit (the cut end of a long word reads as many word pieces) is
        cut by tokens once more, which only shortens it."""
        capacity = key[1]
        by_chars = self._splitter(*key, chars_per_token=MAX_CHARS_PER_TOKEN)
        pieces = [(start + offset, piece) for offset, piece in by_chars.chunk_indices(text) if piece.strip()]
        out: list[tuple[int, str, int | None]] = []
        for (offset, piece), count in zip(pieces, self._count_many([piece for _, piece in pieces]), strict=True):
            if count <= capacity:
                out.append((offset, piece, count))
            else:
                out += [(offset + at, part, None) for at, part in self._splitter(*key).chunk_indices(piece)
                        if part.strip()]
        return out

    def _fitting(self, plans: list[tuple[int, Section, str, tuple[bool, int, int]]]) -> dict[int, int]:
        """{plan index: tokens} of the sections whose whole text fits their chunk capacity. Texts
        far too long to fit are not tokenized here at all (the splitter measures them anyway)."""
        short = [i for i, plan in enumerate(plans) if len(plan[1].text) <= plan[3][1] * MAX_CHARS_PER_TOKEN]
        counts = self._count_many([plans[i][1].text.strip() for i in short])
        return {i: n for i, n in zip(short, counts, strict=True) if n <= plans[i][3][1]}

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without special tokens (estimated from characters without a tokenizer)."""
        return self._count_many([text])[0]

    def _count_many(self, texts: list[str]) -> list[int]:
        if self._tokenizer is None:
            return [math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts]
        # encode_batch runs in parallel in Rust; per-text encode calls would dominate chunking time.
        return [len(e.ids) for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def _prefix(self, heading_path: tuple[str, ...]) -> tuple[str, int]:
        """The heading prefix for ``embed_text`` and the tokens it (with its separator) takes."""
        if not self._cfg.prepend_headings or not heading_path:
            return "", 0
        cached = self._prefixes.get(heading_path)
        if cached is not None:
            return cached
        if len(self._prefixes) >= _PREFIX_CACHE_SIZE:
            # A worker lives for millions of documents; the cache only needs the current one's paths.
            self._prefixes.clear()
        prefix = HEADING_SEPARATOR.join(h.strip() for h in heading_path if h.strip())
        if prefix:
            prefix = self._truncate(prefix, self._max_prefix_tokens)
        # Counted with the separator, so a tokenizer that gives "\n\n" a token is accounted for.
        tokens = self.count_tokens(prefix + PREFIX_SEPARATOR) if prefix else 0
        self._prefixes[heading_path] = (prefix, tokens)
        return prefix, tokens

    def _truncate(self, text: str, max_tokens: int) -> str:
        """``text`` cut after its first ``max_tokens`` tokens (characters without a tokenizer)."""
        if self._tokenizer is None:
            return text[:max_tokens * CHARS_PER_TOKEN].rstrip()
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        if len(encoding.ids) <= max_tokens:
            return text
        return text[:encoding.offsets[max_tokens - 1][1]].rstrip()

    def _splitter(self, markdown: bool, capacity: int, overlap: int, chars_per_token: int | None = None) -> _Splitter:
        """A splitter measuring in the model's tokens, or in characters (``chars_per_token`` per token, or
        CHARS_PER_TOKEN without a tokenizer); one per setting, kept."""
        key = (markdown, capacity, overlap, chars_per_token)
        splitter = self._splitters.get(key)
        if splitter is None:
            cls: type[TextSplitter] | type[MarkdownSplitter] = MarkdownSplitter if markdown else TextSplitter
            if self._tokenizer is not None and chars_per_token is None:
                splitter = cls.from_huggingface_tokenizer(self._tokenizer, capacity=capacity, overlap=overlap)
            else:
                chars = chars_per_token or CHARS_PER_TOKEN
                splitter = cls(capacity * chars, overlap=overlap * chars)
            self._splitters[key] = splitter
        return splitter


__all__ = ["Chunker", "full_text", "windows"]
