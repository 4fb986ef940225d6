"""The embedders against the real packaged model (no mocks; everything here runs offline)."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from docmill.config import EmbeddingConfig
from docmill.embedders import Embedder, available_providers, create_embedder, local_onnx, register_provider
from docmill.embedders.local_onnx import folded_model, model_file
from docmill.errors import ConfigError


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    # batch_size 3 so that the batch tests below cross batch boundaries with uneven lengths.
    return create_embedder(EmbeddingConfig(batch_size=3), threads=2)


def test_default_embedder_loads_offline(embedder: Embedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.model_id == "local/all-MiniLM-L6-v2"
    assert embedder.dimension == 384
    assert embedder.max_tokens == 256


def test_rows_are_unit_norm_float32(embedder: Embedder) -> None:
    vectors = embedder.embed(["a short one", "a somewhat longer sentence about ingestion pipelines", ""])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_similar_words_are_closer(embedder: Embedder) -> None:
    cat, kitten, spreadsheet = embedder.embed(["cat", "kitten", "spreadsheet"])
    assert float(cat @ kitten) > float(cat @ spreadsheet)


def test_query_finds_the_matching_sentence(embedder: Embedder) -> None:
    sentences = [
        "The office kitchen is cleaned every Friday afternoon.",
        "To rotate the signing keys, generate a new key pair and publish it before retiring the old one.",
        "Our quarterly revenue grew by twelve percent.",
        "The hiking trail closes at sunset during winter.",
    ]
    query = embedder.embed_query("how do I rotate signing keys")
    assert query.shape == (384,)
    assert query.dtype == np.float32
    scores = embedder.embed(sentences) @ query
    assert int(np.argmax(scores)) == 1


def test_batched_results_equal_single_results(embedder: Embedder) -> None:
    # Uneven lengths in a scrambled order: length sorting and per-batch padding must not matter.
    texts = ["word " * n + f"item {n}" for n in (40, 1, 120, 7, 300, 3, 60, 15)]
    batched = embedder.embed(texts)
    singles = np.vstack([embedder.embed([t]) for t in texts])
    np.testing.assert_allclose(batched, singles, atol=1e-4)
    np.testing.assert_allclose(embedder.embed_query(texts[2]), singles[2], atol=1e-4)


def test_onnxruntime_runs_short_texts_together_and_long_ones_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = create_embedder(EmbeddingConfig(), threads=1)
    runner = embedder._runner  # type: ignore[attr-defined]
    shapes: list[tuple[int, int]] = []
    real_run = runner.run
    monkeypatch.setattr(runner, "run", lambda feeds: shapes.append(feeds["input_ids"].shape) or real_run(feeds))
    texts = [f"short text number {i}" for i in range(20)] + ["word " * 300, "a longer sentence " * 12]
    vectors = embedder.embed(texts)
    assert sum(rows for rows, _ in shapes) == len(texts)
    assert all(rows <= embedder.batch_size for rows, _ in shapes)
    assert all(rows == 1 or rows * width <= runner.tokens_per_run for rows, width in shapes)
    assert (1, 256) in shapes and max(rows for rows, _ in shapes) == embedder.batch_size
    assert np.allclose(vectors, np.vstack([embedder.embed([t]) for t in texts]), atol=1e-5)


def test_long_text_is_truncated_not_rejected(embedder: Embedder) -> None:
    head = "the worker claims a batch of documents and renews its lease " * 40  # far over 256 tokens
    assert len(embedder.tokenizer().encode(head).ids) > 256
    long_vec, longer_vec = embedder.embed([head, head + " completely different tail about gardening"])
    # Both are cut at 256 tokens, so the differing tail is never seen.
    np.testing.assert_allclose(long_vec, longer_vec, atol=1e-5)


def test_empty_input_gives_empty_matrix(embedder: Embedder) -> None:
    out = embedder.embed([])
    assert out.shape == (0, 384)
    assert out.dtype == np.float32


def test_tokenizer_is_untruncated_and_unpadded(embedder: Embedder) -> None:
    tok = embedder.tokenizer()
    assert tok is not None
    assert tok.truncation is None
    assert tok.padding is None
    assert len(tok.encode("hello " * 600, add_special_tokens=False).ids) == 600
    # A copy: changing it must not change how the embedder truncates.
    tok.enable_truncation(8)
    assert embedder.tokenizer().truncation is None


def test_hugging_face_model_id_is_accepted() -> None:
    cfg = EmbeddingConfig(model="sentence-transformers/all-MiniLM-L6-v2", max_sequence_length=128)
    emb = create_embedder(cfg, threads=1)
    assert emb.dimension == 384
    assert emb.max_tokens == 128


def test_unknown_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"not available offline.*all-MiniLM-L6-v2"):
        create_embedder(EmbeddingConfig(model="BAAI/bge-small-en-v1.5"))


def test_sequence_length_above_model_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_sequence_length 512"):
        create_embedder(EmbeddingConfig(max_sequence_length=512))


def test_wrong_dimensions_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="dimensions 768"):
        create_embedder(EmbeddingConfig(dimensions=768))


def test_unregistered_provider_is_a_config_error() -> None:
    assert "openai" in available_providers()
    # A provider name the config model would refuse, as a plugin-less install of a newer config sees it.
    cfg = EmbeddingConfig.model_construct(provider="cohere")
    with pytest.raises(ConfigError, match=r"provider 'cohere'.*available: fastembed, local, openai"):
        create_embedder(cfg)


def test_registry_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_provider("local", lambda cfg, threads: create_embedder(cfg, threads))


@pytest.mark.skipif(importlib.util.find_spec("fastembed") is not None, reason="fastembed is installed")
def test_missing_fastembed_names_the_extra() -> None:
    with pytest.raises(ConfigError, match=r"pip install 'docmill\[fastembed\]'"):
        create_embedder(EmbeddingConfig(provider="fastembed"))


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is not None,
                    reason="sentence-transformers is installed")
def test_missing_sentence_transformers_names_the_extra() -> None:
    with pytest.raises(ConfigError, match=r"pip install 'docmill\[sentence-transformers\]'"):
        create_embedder(EmbeddingConfig(provider="sentence_transformers"))


def test_folded_model_is_kept_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCMILL_CACHE_DIR", str(tmp_path / "cache"))
    folded = folded_model(model_file())
    assert folded.parent == tmp_path / "cache" and folded.stat().st_size > model_file().stat().st_size
    assert folded_model(model_file()) == folded, "the second worker reuses the folded file"
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".lock", ".onnx"]
    assert "Attention" in _operators(folded), "attention runs as onnxruntime's fused kernel"


def _operators(path: Path) -> set[str]:
    import onnx_ir

    return {node.op_type for node in onnx_ir.load(path).graph}


def test_a_fusion_that_fails_keeps_the_folded_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def no_pattern(source: str, target: str) -> None:
        raise ValueError("no attention pattern in this graph")

    monkeypatch.setattr(local_onnx, "_fuse", no_pattern)
    target = tmp_path / "folded.onnx"
    local_onnx._fold(str(model_file()), str(target))
    assert "kept the model unfused: no attention pattern" in capsys.readouterr().out
    assert target.is_file() and "Attention" not in _operators(target)
    assert [p.name for p in tmp_path.iterdir()] == ["folded.onnx"]


def test_a_fused_graph_with_other_vectors_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import onnx_ir

    real_fuse = local_onnx._fuse

    def fuse_wrongly(source: str, target: str) -> None:
        real_fuse(source, target)
        model = onnx_ir.load(target)
        weight = max(model.graph.initializers.values(), key=lambda v: v.const_value.size)
        weight.const_value = onnx_ir.tensor(weight.const_value.numpy() * 1.01)
        onnx_ir.save(model, target)

    monkeypatch.setattr(local_onnx, "_fuse", fuse_wrongly)
    target = tmp_path / "folded.onnx"
    local_onnx._fold(str(model_file()), str(target))
    assert "kept the model unfused: the fused graph's vectors differ" in capsys.readouterr().out
    assert "Attention" not in _operators(target)


def test_unwritable_model_cache_falls_back_to_the_packaged_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                embedder: Embedder) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("DOCMILL_CACHE_DIR", str(blocker / "cache"))
    assert folded_model(model_file()) == model_file()
    packaged = create_embedder(EmbeddingConfig(runtime="onnxruntime"), threads=1)  # the packaged file as it is
    texts = ["a cat sat on the mat", "quarterly revenue grew by four percent"]
    assert np.allclose(packaged.embed(texts), embedder.embed(texts), atol=1e-5), "folding changes no vector"


def test_a_damaged_folded_model_is_folded_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                embedder: Embedder, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("DOCMILL_CACHE_DIR", str(tmp_path / "cache"))
    folded = folded_model(model_file())
    folded.write_bytes(b"\x00" * 1000)  # a disk error, or a copy cut short by another tool
    with caplog.at_level(logging.WARNING, logger="docmill.embedders.local_onnx"):
        again = create_embedder(EmbeddingConfig(runtime="onnxruntime"), threads=1)
    assert "does not load" in caplog.text and folded.stat().st_size > model_file().stat().st_size
    texts = ["a cat sat on the mat", "quarterly revenue grew by four percent"]
    assert np.allclose(again.embed(texts), embedder.embed(texts), atol=1e-5)


def test_the_int8_model_is_close_to_the_float_one_and_never_shares_its_cache(embedder: Embedder) -> None:
    quantized = create_embedder(EmbeddingConfig(quantize=True), threads=2)
    assert quantized.model_id == "local/all-MiniLM-L6-v2-int8" != embedder.model_id
    sentences = ["The invoice must be paid within thirty days.", "Penguins cannot fly but swim very well.",
                 "Set the environment variable before starting the server.", "a cat sat on the mat"]
    cosines = (quantized.embed(sentences) * embedder.embed(sentences)).sum(axis=1)
    assert cosines.min() >= local_onnx.MIN_QUANTIZED_COSINE and cosines.max() < 1 - 1e-5  # close, not the same
    scores = quantized.embed(sentences) @ quantized.embed_query("Which birds are good swimmers?")
    assert int(np.argmax(scores)) == 1


def test_quantize_is_refused_where_it_cannot_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"embedding\.quantize applies to provider 'local' only"):
        EmbeddingConfig(provider="openai", quantize=True)
    assert "quantize" not in EmbeddingConfig().identity(), "the float model's run ids stay as they were"
    assert EmbeddingConfig(quantize=True).identity()["quantize"] is True
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("DOCMILL_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(ConfigError, match=r"embedding\.quantize: cannot make the int8 model"):
        create_embedder(EmbeddingConfig(quantize=True), threads=1)


SENTENCES = ["The invoice must be paid within thirty days.", "Penguins cannot fly but swim very well.",
             "Set the environment variable before starting the server.", "a cat sat on the mat",
             "word " * 300]
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="openvino has wheels for x86-64 and ARM64 only")


@needs_openvino
def test_openvino_and_onnxruntime_give_the_same_vectors() -> None:
    engines = {runtime: create_embedder(EmbeddingConfig(runtime=runtime), threads=2)
               for runtime in ("openvino", "onnxruntime")}
    texts = SENTENCES * 7  # several batches on both lanes, of uneven lengths
    assert np.allclose(engines["openvino"].embed(texts), engines["onnxruntime"].embed(texts), atol=1e-5)
    assert engines["openvino"].model_id == engines["onnxruntime"].model_id


@needs_openvino
def test_bfloat16_vectors_stay_close_to_float32(embedder: Embedder) -> None:
    fast = create_embedder(EmbeddingConfig(runtime="openvino", precision="bfloat16"), threads=2)
    cosines = (fast.embed(SENTENCES) * embedder.embed(SENTENCES)).sum(axis=1)
    assert cosines.min() > 0.999
    assert "precision" not in EmbeddingConfig(runtime="openvino", precision="bfloat16").identity(), "same run id"


def test_runtime_settings_are_refused_where_they_cannot_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in (("runtime", "openvino"), ("precision", "bfloat16")):
        with pytest.raises(ValueError, match=rf"embedding\.{key} applies to provider 'local' only"):
            EmbeddingConfig(provider="openai", **{key: value})
    with pytest.raises(ValueError, match=r"quantize runs on onnxruntime"):
        EmbeddingConfig(quantize=True, runtime="openvino")
    with pytest.raises(ValueError, match=r"bfloat16 needs embedding\.runtime openvino"):
        EmbeddingConfig(runtime="onnxruntime", precision="bfloat16")
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)  # as on a machine without its wheel
    with pytest.raises(ConfigError, match=r"embedding\.runtime openvino: cannot import openvino"):
        create_embedder(EmbeddingConfig(runtime="openvino"), threads=1)


FIRST_CALLS_TOGETHER = """
import threading, numpy as np
from docmill.embedders.local_onnx import model_file
from docmill.embedders.onnx_runtimes import OpenVinoRunner
runner = OpenVinoRunner(model_file(), 2, "float32")
feeds = {name: np.ones((2, 16), np.int64) for name in runner.input_names}
barrier = threading.Barrier(2)
def call():
    barrier.wait()
    runner.run(feeds)
lanes = [threading.Thread(target=call) for _ in range(2)]
for lane in lanes: lane.start()
for lane in lanes: lane.join()
"""


@needs_openvino
def test_two_lanes_making_the_first_call_together_do_not_deadlock() -> None:
    # Without the runner's own first call, 2 in 10 fresh processes hung for good here.
    for _ in range(8):
        subprocess.run([sys.executable, "-c", FIRST_CALLS_TOGETHER], check=True, timeout=60)
