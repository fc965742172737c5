"""The neural engine's real code path (sherpa-onnx VITS) on a tiny ONNX model built here, plus its
offline behaviour with the default Hub model (reported unavailable at once; the registry falls back).

The tiny model has the real VITS ONNX interface (x, x_length, noise_scale, length_scale, noise_scale_w ->
audio) and metadata, with a lexicon + tokens front end; it makes a tone per phone token, so the audio
length follows the text. It checks our loading/synthesis code, not voice quality.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from common.errors import UserFacingError
from tts import TTS
from tts.neural import SherpaVitsEngine

HOP = 256  # samples per token
SR = 16000


def build_tiny_vits(d):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto as T
    from onnx import helper as h

    nodes = [
        h.make_node("Cast", ["x"], ["xf"], to=T.FLOAT),                 # (1, T)
        h.make_node("Unsqueeze", ["xf", "ax2"], ["xf3"]),                # (1, T, 1)
        h.make_node("Expand", ["xf3", "hop_shape"], ["xe"]),             # (1, T, HOP)
        h.make_node("Reshape", ["xe", "flat"], ["ids"]),                 # (1, T*HOP) token id per sample
        h.make_node("Mul", ["ids", "zero"], ["z"]),
        h.make_node("Add", ["z", "one"], ["ones"]),
        h.make_node("CumSum", ["ones", "ax1"], ["n"]),                  # sample index 1..T*HOP
        h.make_node("Mul", ["ids", "k_id"], ["f1"]),
        h.make_node("Add", ["f1", "k_base"], ["freq"]),                  # a pitch per token
        h.make_node("Mul", ["n", "freq"], ["ph"]),
        h.make_node("Mul", ["ph", "length_scale"], ["ph2"]),
        h.make_node("Sin", ["ph2"], ["s"]),
        h.make_node("Mul", ["s", "amp"], ["s2"]),
        h.make_node("Mul", ["noise_scale", "zero"], ["nz"]),             # use every input once
        h.make_node("Mul", ["noise_scale_w", "zero"], ["nzw"]),
        h.make_node("Add", ["s2", "nz"], ["s3"]),
        h.make_node("Add", ["s3", "nzw"], ["s4"]),
        h.make_node("Reshape", ["s4", "out_shape"], ["y"]),              # (1, 1, T*HOP)
    ]
    inits = [
        h.make_tensor("ax2", T.INT64, [1], [2]), h.make_tensor("ax1", T.INT64, [], [1]),
        h.make_tensor("hop_shape", T.INT64, [3], [1, 1, HOP]), h.make_tensor("flat", T.INT64, [2], [1, -1]),
        h.make_tensor("zero", T.FLOAT, [], [0.0]), h.make_tensor("one", T.FLOAT, [], [1.0]),
        h.make_tensor("k_id", T.FLOAT, [], [0.002]), h.make_tensor("k_base", T.FLOAT, [], [0.05]),
        h.make_tensor("amp", T.FLOAT, [], [0.3]), h.make_tensor("out_shape", T.INT64, [3], [1, 1, -1]),
    ]
    inputs = [h.make_tensor_value_info("x", T.INT64, [1, "T"]), h.make_tensor_value_info("x_length", T.INT64, [1])]
    inputs += [h.make_tensor_value_info(n, T.FLOAT, [1]) for n in ("noise_scale", "length_scale", "noise_scale_w")]
    graph = h.make_graph(nodes, "tiny_vits", inputs, [h.make_tensor_value_info("y", T.FLOAT, [1, 1, "L"])],
                         initializer=inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"sample_rate": str(SR), "add_blank": "0", "n_speakers": "1", "language": "Chinese",
            "comment": "tiny test model", "punctuation": "， 。 ！ ？ , . ! ?"}
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(model)
    d.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(d / "model.onnx"))
    tokens = ["_", "n", "in2", "h", "ao3", "sh", "i4", "j", "ie4", "e", "l", "o", "w", "r", "d", "，", "。", ",", ".", " "]
    (d / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(tokens)), encoding="utf-8")
    (d / "lexicon.txt").write_text("您 n in2\n好 h ao3\n世 sh i4\n界 j ie4\nhello h e l o\nworld w o r l d\n",
                                   encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_vits(tmp_path_factory.mktemp("tiny_vits"))


def test_neural_engine_runs_a_local_model_directory(tiny_model):
    eng = SherpaVitsEngine(model=str(tiny_model), num_threads=1)
    st = eng.status()
    assert st.available and st.languages == ("zh", "en"), st.reason
    short = eng.synthesize("您好。", "zh")
    long = eng.synthesize("您好，世界。", "zh")
    assert short.sample_rate == SR and short.engine == "neural" and short.wave.dtype == np.float32
    assert np.sqrt(np.mean(long.wave ** 2)) > 0.05
    assert long.duration_s > short.duration_s  # more phones, more audio
    en = eng.synthesize("hello world.", "en")
    assert en.duration_s >= 9 * HOP / SR and np.isfinite(en.wave).all()


def test_registry_uses_the_neural_voice_when_present(tiny_model):
    t = TTS(neural_model=str(tiny_model))
    assert t.active_engine("zh") == "neural" and t.active_engine("en") == "neural"
    sp = t.synthesize("您好，世界。")
    assert sp.engine == "neural" and sp.sample_rate == SR


def test_default_hub_model_offline_is_unavailable_at_once_and_registry_falls_back():
    t0 = time.perf_counter()
    t = TTS()  # conftest sets HF_HUB_OFFLINE=1: the Hub cannot be reached
    st = {s.name: s for s in t.engines()}["neural"]
    assert time.perf_counter() - t0 < 5  # no 25 s retry loop
    assert not st.available and "vits-melo-tts-zh_en" in st.reason and "DH_TTS_NEURAL_MODEL" in st.reason
    assert t.active_engine("zh") == "espeak"
    with pytest.raises(UserFacingError, match="not available"):
        t.synthesize("您好", engine="neural")


def test_a_directory_without_a_model_is_explained(tmp_path):
    st = SherpaVitsEngine(model=str(tmp_path)).status()
    assert not st.available and "no .onnx model" in st.reason
