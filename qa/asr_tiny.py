"""A tiny speech recogniser with SenseVoice's ONNX interface and random seeded weights, for tests and benches.

The real SenseVoice weights are not reachable from the build machine; this model runs the same sherpa-onnx code
path (inputs x (N, T, 560) LFR features, x_length, language, text_norm; output CTC logits (N, T + 4, V) whose first
four frames are the language / emotion / event / ITN tags). Its transcripts are whatever its random weights decode
to - real model output of a meaningless model, never presented as speech recognition. Costs next to nothing to
run, so a bench on it measures everything but recognition (SenseVoice-Small: RTF ~0.06 on CPU, see qa/asr.py).
Needs the ``onnx`` package (a development dependency).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TOKENS = ["<blank>", "<unk>", "<|zh|>", "<|en|>", "<|NEUTRAL|>", "<|Speech|>", "<|woitn|>", "<|withitn|>",
          *"你好办理身份证护照", "▁how", "▁to", "▁renew", "▁passport"]
N_SPECIAL = 8  # blank, unk and the tag tokens: never emitted in the body by the tiny model
LANG_IDS = {"auto": 0, "zh": 1, "en": 2}


def build_tiny_sense_voice(folder: Path, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    v, feat = len(TOKENS), 80 * 7  # vocabulary, LFR feature size (7 stacked 80-dim fbank frames)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(TOKENS)), encoding="utf-8")
    w = rng.normal(0, 0.05, (feat, v)).astype(np.float32)  # (560, V) frame -> logits
    b = np.zeros(v, np.float32)
    b[:N_SPECIAL] = -30.0  # body frames never decode to blank or tags
    prefix = np.full((3, 4, v), -30.0, np.float32)  # language id -> 4 tag frames (lang, emotion, event, itn)
    for lang_id, lang_token in ((0, 2), (1, 2), (2, 3)):  # auto and zh tag <|zh|>, en tags <|en|>
        for j, tok in enumerate((lang_token, 4, 5, 6)):
            prefix[lang_id, j, tok] = 30.0
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]),  # (N, T, V)
             helper.make_node("Add", ["xw", "b"], ["body"]),
             helper.make_node("Cast", ["language"], ["lang64"], to=TensorProto.INT64),
             helper.make_node("Gather", ["prefix", "lang64"], ["tags"], axis=0),  # (N, 4, V)
             helper.make_node("Concat", ["tags", "body"], ["logits"], axis=1)]  # (N, T + 4, V)
    graph = helper.make_graph(
        nodes, "tiny_sense_voice",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", feat]),
         helper.make_tensor_value_info("x_length", TensorProto.INT32, ["N"]),
         helper.make_tensor_value_info("language", TensorProto.INT32, ["N"]),
         helper.make_tensor_value_info("text_norm", TensorProto.INT32, ["N"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "T4", v])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(prefix, "prefix")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    meta = {"vocab_size": v, "blank_id": 0, "lfr_window_size": 7, "lfr_window_shift": 6, "normalize_samples": 0,
            "with_itn": 14, "without_itn": 15, "lang_ja": 0, "lang_ko": 0, "lang_yue": 0,
            **{f"lang_{k}": i for k, i in LANG_IDS.items()},
            "neg_mean": ",".join(["-8.0"] * feat), "inv_stddev": ",".join(["0.25"] * feat)}
    for k, val in meta.items():
        e = model.metadata_props.add()
        e.key, e.value = k, str(val)
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.int8.onnx"))
    return folder


__all__ = ["LANG_IDS", "N_SPECIAL", "TOKENS", "build_tiny_sense_voice"]
