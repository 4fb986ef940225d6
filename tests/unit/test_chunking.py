"""The chunker with the real packaged tokenizer (and without one, as HTTP providers use it)."""

from __future__ import annotations

import itertools
import random
import string

import pytest
import tokenizers

from docmill.chunking import MAX_CHARS_PER_TOKEN, Chunker, full_text, windows
from docmill.config import ChunkingConfig
from docmill.embedders.local_onnx import tokenizer_file
from docmill.models import Chunk, ParsedDocument, Section

MODEL_MAX = 256
_WORDS = ["queue", "worker", "lease", "token", "retry", "backoff", "document", "parser", "chunk", "vector",
          "search", "index", "heading", "page", "section", "embed", "model", "batch", "store", "schema",
          "claim", "fence", "heartbeat", "run"]


@pytest.fixture(scope="module")
def tok() -> tokenizers.Tokenizer:
    # The packaged file has truncation at 128 baked in; the chunker must ignore it.
    return tokenizers.Tokenizer.from_file(str(tokenizer_file()))


def prose(n_sentences: int, seed: int = 0, per_paragraph: int = 5) -> str:
    """Deterministic sentences of 6-14 words, grouped into paragraphs."""
    rng = random.Random(seed)
    sentences = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "."
                 for _ in range(n_sentences)]
    return "\n\n".join(" ".join(sentences[i:i + per_paragraph])
                       for i in range(0, len(sentences), per_paragraph))


def n_tokens(tok: tokenizers.Tokenizer, text: str, special: bool) -> int:
    copy = tokenizers.Tokenizer.from_str(tok.to_str())
    copy.no_truncation()
    copy.no_padding()
    return len(copy.encode(text, add_special_tokens=special).ids)


def assert_offsets(doc: ParsedDocument, chunks: list[Chunk]) -> None:
    text = full_text(doc)
    for chunk in chunks:
        assert text[chunk.char_start:chunk.char_end] == chunk.text


def test_empty_document_gives_no_chunks(tok: tokenizers.Tokenizer) -> None:
    chunker = Chunker(ChunkingConfig(), tok, MODEL_MAX)
    assert chunker.chunk(ParsedDocument(title=None, sections=[], mime="text/plain")) == []
    blank = ParsedDocument(title="t", sections=[Section("  \n\n "), Section("")], mime="text/plain")
    assert chunker.chunk(blank) == []


def test_chunks_respect_token_limits_and_overlap(tok: tokenizers.Tokenizer) -> None:
    # One long paragraph, so chunks end at sentence boundaries. The splitter's overlap is made of
    # whole semantic units (here sentences) up to ``overlap`` tokens; sentences here are <= 17
    # tokens, so every neighbouring pair must share at least one sentence.
    cfg = ChunkingConfig(max_tokens=64, overlap=20)
    text = prose(120, per_paragraph=1000)
    doc = ParsedDocument(title=None, sections=[Section(text)], mime="text/plain")
    chunks = Chunker(cfg, tok, MODEL_MAX).chunk(doc)
    assert len(chunks) > 10
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.token_count == n_tokens(tok, chunk.text, special=False)
        assert 0 < chunk.token_count <= 64
        assert chunk.text == chunk.text.strip()
    assert_offsets(doc, chunks)
    for prev, nxt in itertools.pairwise(chunks):
        # The next chunk starts inside the previous one: they share text.
        assert prev.char_start < nxt.char_start < prev.char_end
        shared = text[nxt.char_start:prev.char_end]
        assert 0 < n_tokens(tok, shared, special=False) <= 20
    # ...and together they cover the whole section.
    assert chunks[0].char_start == 0
    assert chunks[-1].char_end == len(full_text(doc))


def test_no_overlap_when_configured_off(tok: tokenizers.Tokenizer) -> None:
    cfg = ChunkingConfig(max_tokens=64, overlap=0)
    doc = ParsedDocument(title=None, sections=[Section(prose(60))], mime="text/plain")
    chunks = Chunker(cfg, tok, MODEL_MAX).chunk(doc)
    assert all(nxt.char_start >= prev.char_end for prev, nxt in itertools.pairwise(chunks))


def test_headings_pages_and_offsets_are_carried(tok: tokenizers.Tokenizer) -> None:
    sections = [
        Section(prose(3, seed=1), ("Guide",), page=1),
        Section("", ("Guide", "Empty"), page=1),
        Section(prose(40, seed=2), ("Guide", "Install"), page=2),
        Section(prose(25, seed=3), (), page=3),
    ]
    doc = ParsedDocument(title="Guide", sections=sections, mime="application/pdf")
    chunks = Chunker(ChunkingConfig(max_tokens=80, overlap=10), tok, MODEL_MAX).chunk(doc)
    assert_offsets(doc, chunks)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert {(c.heading_path, c.page) for c in chunks} == {(("Guide",), 1), (("Guide", "Install"), 2), ((), 3)}
    text = full_text(doc)
    for chunk in chunks:
        # Each chunk lies inside its own section: chunks never straddle a section boundary.
        section = next(s for s in sections if s.heading_path == chunk.heading_path)
        assert chunk.text in section.text
        assert "\n\n".join(s.text for s in sections) == text
        if chunk.heading_path:
            assert chunk.embed_text == " > ".join(chunk.heading_path) + "\n\n" + chunk.text
        else:
            assert chunk.embed_text == chunk.text


def test_prepend_headings_off_embeds_bare_text(tok: tokenizers.Tokenizer) -> None:
    doc = ParsedDocument(title=None, sections=[Section(prose(10), ("A", "B"))], mime="text/html")
    chunks = Chunker(ChunkingConfig(prepend_headings=False), tok, MODEL_MAX).chunk(doc)
    assert chunks
    assert all(c.embed_text == c.text and c.heading_path == ("A", "B") for c in chunks)


@pytest.mark.parametrize("max_tokens", [200, 254, 400])
def test_embed_text_fits_the_model(tok: tokenizers.Tokenizer, max_tokens: int) -> None:
    long_heading = "Appendix " + " ".join(f"clause{i}" for i in range(300))  # alone above the limit
    sections = [
        Section(prose(80, seed=4), ("Operations manual", "Key management", "Rotation of signing keys")),
        Section(prose(80, seed=5), (long_heading, "Sub")),
        Section(prose(80, seed=6)),
    ]
    doc = ParsedDocument(title=None, sections=sections, mime="text/plain")
    cfg = ChunkingConfig(max_tokens=max_tokens, overlap=32)
    chunks = Chunker(cfg, tok, MODEL_MAX).chunk(doc)
    assert_offsets(doc, chunks)
    for chunk in chunks:
        assert n_tokens(tok, chunk.embed_text, special=True) <= MODEL_MAX
        assert chunk.token_count <= min(max_tokens, MODEL_MAX)
    # The huge heading path was cut, not dropped, to at most a quarter of the model's input.
    cut = [c for c in chunks if c.embed_text.startswith("Appendix")]
    assert cut
    for chunk in cut:
        prefix = chunk.embed_text[:-len(chunk.text)].removesuffix("\n\n")
        assert long_heading.startswith(prefix)
        assert 0 < n_tokens(tok, prefix, special=False) <= (MODEL_MAX - 2) // 4


def test_markdown_sections_split_on_markdown_structure(tok: tokenizers.Tokenizer) -> None:
    items = "\n".join(f"- item {i}: {prose(1, seed=i)}" for i in range(30))
    code = "```python\n" + "\n".join(f"value_{i} = compute({i})" for i in range(8)) + "\n```"
    body = f"{prose(10, seed=7)}\n\n{items}\n\n{code}\n\n{prose(10, seed=8)}"
    doc = ParsedDocument(title="Readme", sections=[Section(body, ("Readme", "Usage"))], mime="text/markdown")
    chunks = Chunker(ChunkingConfig(max_tokens=96, overlap=0), tok, MODEL_MAX).chunk(doc)
    assert len(chunks) > 3
    assert_offsets(doc, chunks)
    assert all(c.heading_path == ("Readme", "Usage") and c.token_count <= 96 for c in chunks)
    # The code block is short enough to stay whole: Markdown-aware splitting keeps it in one chunk.
    assert any(code in c.text for c in chunks)
    # List items are never cut mid-item.
    for c in chunks:
        for line in c.text.splitlines():
            if line.startswith("- item"):
                assert line.endswith(".")


def test_unicode_offsets_are_character_offsets(tok: tokenizers.Tokenizer) -> None:
    text = " ".join(["Größe, naïve café — 東京の天気は晴れ。🙂"] * 60)
    doc = ParsedDocument(title=None, sections=[Section("é" * 3), Section(text)], mime="text/plain")
    chunks = Chunker(ChunkingConfig(max_tokens=50, overlap=10), tok, MODEL_MAX).chunk(doc)
    assert len(chunks) > 3
    assert_offsets(doc, chunks)


def test_without_tokenizer_sizes_by_characters() -> None:
    sections = [Section(prose(100, seed=9), ("Guide", "Setup"), page=4)]
    doc = ParsedDocument(title=None, sections=[Section("intro"), *sections], mime="text/plain")
    cfg = ChunkingConfig(max_tokens=50, overlap=10)
    chunks = Chunker(cfg, None, 8191).chunk(doc)
    assert len(chunks) > 5
    assert_offsets(doc, chunks)
    assert chunks[0].text == "intro" and chunks[0].heading_path == ()
    for chunk in chunks[1:]:
        assert len(chunk.text) <= 50 * 4
        assert chunk.token_count == -(-len(chunk.text) // 4)
        assert chunk.heading_path == ("Guide", "Setup") and chunk.page == 4
        assert chunk.embed_text.startswith("Guide > Setup\n\n")
    assert any(nxt.char_start < prev.char_end for prev, nxt in itertools.pairwise(chunks[1:]))


def test_chunker_does_not_change_the_callers_tokenizer(tok: tokenizers.Tokenizer) -> None:
    before = tok.to_str()
    Chunker(ChunkingConfig(), tok, MODEL_MAX).chunk(
        ParsedDocument(title=None, sections=[Section(prose(5))], mime="text/plain"))
    assert tok.to_str() == before


def test_windows_cut_at_the_best_break_and_cover_the_text() -> None:
    text = prose(400, seed=3)  # paragraphs of five sentences
    parts = windows(text, size=2000)
    assert len(parts) > 1 and "".join(w for _, w in parts) == text
    assert all(len(w) <= 2000 and text[start:start + len(w)] == w for start, w in parts)
    assert all(w.endswith("\n\n") for _, w in parts[:-1]), "cut after a paragraph break"
    one_line = "word " * 2000
    assert all(w.endswith(" ") for _, w in windows(one_line, size=999)[:-1])
    assert windows("x" * 2500, size=1000) == [(0, "x" * 1000), (1000, "x" * 1000), (2000, "x" * 500)]


def test_a_long_section_without_breaks_is_chunked_within_limits(tok: tokenizers.Tokenizer) -> None:
    # One 200,000-character line: split window by window (whole, the splitter slows down more than
    # linearly on such text); chunks still respect the limits and map back to the text.
    rng = random.Random(5)
    line = " ".join(rng.choice(_WORDS) for _ in range(25_000))
    doc = ParsedDocument(title="t", sections=[Section(text=line)], mime="text/plain")
    chunks = Chunker(ChunkingConfig(chunk_size=128, chunk_overlap=16), tok, MODEL_MAX).chunk(doc)
    text = full_text(doc)
    assert all(text[c.char_start:c.char_end] == c.text for c in chunks)
    assert max(c.token_count for c in chunks) <= 128
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert all(a.char_start < b.char_start for a, b in itertools.pairwise(chunks))
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(line)


def letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_letters) for _ in range(n))


def assert_within_limits(tok: tokenizers.Tokenizer, doc: ParsedDocument, chunks: list[Chunk], max_tokens: int) -> None:
    assert_offsets(doc, chunks)
    counter = tokenizers.Tokenizer.from_str(tok.to_str())
    counter.no_truncation()
    counter.no_padding()
    encodings = counter.encode_batch([chunk.text for chunk in chunks], add_special_tokens=False)
    for chunk, encoding in zip(chunks, encodings, strict=True):
        assert len(chunk.text) <= max_tokens * MAX_CHARS_PER_TOKEN
        assert 0 < chunk.token_count == len(encoding.ids) <= max_tokens
    assert all(a.char_start < b.char_start for a, b in itertools.pairwise(chunks))
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(full_text(doc))


def test_text_without_spaces_is_cut_by_characters(tok: tokenizers.Tokenizer) -> None:
    # The tokenizer makes one [UNK] of any word over 100 characters: these 100,000 letters were four
    # chunks of up to 32,000 characters, each counted as a single token.
    line = letters(random.Random(6), 100_000)
    doc = ParsedDocument(title="t", sections=[Section(text=line)], mime="text/plain")
    chunks = Chunker(ChunkingConfig(max_tokens=128, overlap=16), tok, MODEL_MAX).chunk(doc)
    assert_within_limits(tok, doc, chunks, 128)
    assert len(chunks) >= 100_000 // (128 * MAX_CHARS_PER_TOKEN)


def test_a_long_word_cut_by_characters_still_fits_the_token_budget(tok: tokenizers.Tokenizer) -> None:
    # 121 tokens as a whole, but too long: cut after 1,536 characters, the word's last 100 letters read
    # as dozens of word pieces, which with the 120 words after them no longer fit 128 tokens.
    text = letters(random.Random(7), 1636) + " " + " ".join(["queue"] * 120)
    doc = ParsedDocument(title="t", sections=[Section(text=text)], mime="text/markdown")
    chunks = Chunker(ChunkingConfig(max_tokens=128, overlap=0), tok, MODEL_MAX).chunk(doc)
    assert_within_limits(tok, doc, chunks, 128)
    assert len(chunks) >= 3
