"""Quantization levels wired into the app (issue 6): the whisper chain, config pins and
forbids, the level chooser the workers use, the background switch and `transcrevai models`.

All real: CTranslate2 and onnxruntime load the real models in child processes, the engine
runs real worker processes. Nothing is mocked.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest

from engine.audio.source import read_audio as load_audio
from engine.config import Config, ConfigError, load_config, parse_config
from engine.diarization.pipeline import Diarizer
from engine.messages import ModelLevels, TranscriptResult, WorkerState, WorkerStatus
from engine.models import ct2_chain, levels, onnx_convert
from engine.models import quantize as q
from engine.models.registry import DIARIZATION_FILES, WHISPER_BASE_FILES, resolve_whisper
from engine.scoring import annotation as to_annotation
from engine.scoring import read_rttm as read_rttm_turns
from engine.supervisor import Supervisor
from tests.conftest import ROOT, clip_path, run_cli

CFG = load_config()
MODELS = CFG.paths.models_dir


@pytest.fixture(scope="module")
def whisper_folder() -> Path:
    return Path(resolve_whisper("base", MODELS, False).model)


DIGEST = WHISPER_BASE_FILES["model.bin"][0]


def _by_level(res: q.ChainResult) -> dict[str, q.LevelResult]:
    return {lv.level: lv for lv in res.levels}


def assert_chain_lands_on_first_accepted(res: q.ChainResult) -> None:
    """Whatever this CPU supports: the level in use is the first accepted one in order,
    every level before it says why it was not used, every level after it was skipped, and
    an accepted quantized level agrees with the reference and is not slower."""
    order = [lv.level for lv in res.levels]
    used = order.index(res.in_use)
    assert res.levels[used].result == "accepted"
    for lv in res.levels[:used]:
        assert lv.result in ("failed", "unavailable", "forbidden", "skipped") and lv.reason, lv
    assert all(lv.result == "skipped" for lv in res.levels[used + 1:])
    chosen = res.levels[used]
    if chosen.level != order[-1]:  # a quantized level: measured against the reference
        assert chosen.agreement is not None
        assert chosen.agreement >= ct2_chain.MIN_WORD_AGREEMENT
        assert chosen.speed_ratio is not None and chosen.speed_ratio > 1.0 / q.MAX_SLOWDOWN


def test_whisper_chain_lands_on_the_first_accepted_level_and_caches_it(
        whisper_folder: Path, tmp_path: Path) -> None:
    res = ct2_chain.build_whisper_chain(whisper_folder, tmp_path, DIGEST)
    assert [lv.level for lv in res.levels] == list(ct2_chain.WHISPER_LEVELS)
    assert_chain_lands_on_first_accepted(res)
    # a second run reuses the manifest; a CTranslate2 upgrade invalidates it
    again = ct2_chain.build_whisper_chain(whisper_folder, tmp_path, DIGEST)
    assert again.from_cache and again.in_use == res.in_use
    man_path = tmp_path / ct2_chain.MANIFEST_NAME
    man = json.loads(man_path.read_text())
    man["versions"]["ctranslate2"] = "0.0.1"
    man_path.write_text(json.dumps(man))
    res2, why = ct2_chain.cached_whisper(whisper_folder, tmp_path, DIGEST, None, None)
    assert res2 is None and "ctranslate2 version changed" in why


def test_whisper_fp16_unavailable_here_and_forbidden_levels_fall_through(
        whisper_folder: Path, tmp_path: Path) -> None:
    supported = ct2_chain.supported_levels()
    res = ct2_chain.build_whisper_chain(whisper_folder, tmp_path, DIGEST,
                                        allowed={"int8_float32", "float16", "float32"})
    lv = _by_level(res)
    assert lv["int8"].result == "forbidden"
    assert_chain_lands_on_first_accepted(res)  # int8_float32, unless slower or off here
    if "float16" not in supported:
        res = ct2_chain.build_whisper_chain(whisper_folder, tmp_path / "b", DIGEST,
                                            allowed={"float16", "float32"})
        lv = _by_level(res)
        assert lv["float16"].result == "unavailable"
        assert "ValueError" in lv["float16"].reason and "int8" in lv["float16"].reason
        assert res.in_use == "float32" and lv["float32"].result == "accepted"


def test_whisper_level_failing_in_the_child_falls_back(whisper_folder: Path,
                                                       tmp_path: Path) -> None:
    """Told FP16 is supported, the chain tries it: CTranslate2 really raises in the child,
    the level fails with that reason and the chain lands on float32."""
    if "float16" in ct2_chain.supported_levels():
        pytest.skip("this CPU runs float16; the failure path needs one that does not")
    res = ct2_chain.build_whisper_chain(
        whisper_folder, tmp_path, DIGEST, allowed={"float16", "float32"},
        supported={"int8", "int8_float32", "float16", "float32"})
    lv = _by_level(res)
    assert lv["float16"].result == "failed"
    assert "load/run failed in child" in lv["float16"].reason
    assert "float16" in lv["float16"].reason
    assert res.in_use == "float32"


def test_a_hanging_probe_is_killed_at_its_timeout() -> None:
    src = MODELS / "diarization" / "campplus.onnx"
    t0 = time.monotonic()
    out = onnx_convert.probe_in_child("embedding", src, reps=50, timeout=1.0)
    assert not out.ok and "timed out after 1 s" in out.reason
    assert time.monotonic() - t0 < 10


def test_cancel_stops_a_build_and_caches_nothing(tmp_path: Path) -> None:
    cancel = threading.Event()
    timer = threading.Timer(2.0, cancel.set)
    timer.start()
    src = MODELS / "diarization" / "campplus.onnx"
    with pytest.raises(q.ChainCancelled):
        q.build_chain("embedding", src, tmp_path, cancel=cancel, reps=50)
    timer.cancel()
    assert not list(tmp_path.glob("*.manifest.json"))
    assert not list(tmp_path.glob(".*tmp*"))  # no half-written artefact left behind


def test_config_pins_and_forbids(tmp_path: Path) -> None:
    cfg = parse_config({"models": {"forbid": "fp16, int8-simplified", "embedding": "fp32"},
                        "transcription": {"compute_type": "int8_float32"}}, tmp_path)
    assert levels.allowed(cfg, "embedding") == {"int8-conservative", "fp32"}
    assert levels.allowed(cfg, "whisper") is None
    assert levels.pinned(cfg, "embedding") == "fp32"
    assert levels.pinned(cfg, "segmentation") is None
    assert levels.pinned(cfg, "whisper") == "int8_float32"
    # a pinned whisper level runs at once (CTranslate2 converts at load)
    ch = levels.choose(cfg, "whisper", tmp_path, DIGEST)
    assert ch.level == "int8_float32" and ch.fallbacks == ("float32",)
    for bad, key in ((
            {"models": {"forbid": "int4"}}, "models.forbid"),
            ({"models": {"forbid": "fp32"}}, "models.forbid"),
            ({"models": {"segmentation": "int4"}}, "models.segmentation"),
            ({"transcription": {"compute_type": "float16"}}, "transcription.compute_type")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_config(bad, tmp_path)


def test_a_pinned_onnx_level_is_the_only_one_tried(tmp_path: Path) -> None:
    cfg = parse_config({"models": {"segmentation": "fp32"}}, tmp_path)
    src = MODELS / "diarization" / "segmentation-3.0.onnx"
    res = q.build_chain("segmentation", src, tmp_path / "cache",
                        levels.allowed(cfg, "segmentation"), levels.pinned(cfg, "segmentation"))
    assert res.in_use == "fp32"
    assert all(lv.reason == "config pins fp32" for lv in res.levels[:3])


def test_chooser_uses_cache_and_never_loads_a_tampered_artefact(tmp_path: Path) -> None:
    """What a worker does at load: the validated level from the cache, or FP32 when the
    cached file fails its hash (never the corrupted file)."""
    models = _linked_models(tmp_path)
    cfg = _config_for(models, tmp_path)
    emb = models / "diarization" / "campplus.onnx"
    digest = DIARIZATION_FILES[emb.name][0]
    assert levels.choose(cfg, "embedding", emb, digest).level == "fp32"  # nothing cached
    res = levels.build(cfg, "embedding")
    ch = levels.choose(cfg, "embedding", emb, digest)
    assert ch.validated and ch.level == res.in_use and ch.path == res.path
    if res.in_use != "fp32":
        data = bytearray(res.path.read_bytes())
        data[len(data) // 3] ^= 0x55
        res.path.write_bytes(bytes(data))
        ch = levels.choose(cfg, "embedding", emb, digest)
        assert ch.level == "fp32" and ch.path == emb and not ch.validated
        assert "embedding" in levels.needs_build(cfg)


def _linked_models(tmp_path: Path) -> Path:
    """A models folder with the real weights (links) and an empty cache."""
    models = tmp_path / "models"
    models.mkdir()
    for name in ("whisper-base", "diarization"):
        (models / name).symlink_to(MODELS / name)
    return models


def _config_for(models: Path, tmp_path: Path) -> Config:
    import tomllib

    text = (ROOT / "config.toml").read_text()
    cfg = parse_config(tomllib.loads(text), ROOT)
    return dataclasses.replace(cfg, paths=dataclasses.replace(
        cfg.paths, models_dir=models, log_dir=tmp_path / "logs"))


def test_first_start_runs_fp32_then_switches_in_the_background(tmp_path: Path) -> None:
    models = _linked_models(tmp_path)
    cfg = _config_for(models, tmp_path)
    seen: list[tuple[float, object]] = []
    t0 = time.monotonic()
    with Supervisor(cfg) as engine:
        ready_at: dict[str, float] = {}
        switched: ModelLevels | None = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            for ev in engine.poll(0.2):
                seen.append((time.monotonic() - t0, ev))
                if isinstance(ev, WorkerStatus) and ev.state == WorkerState.READY:
                    ready_at.setdefault(ev.role, time.monotonic() - t0)
                if isinstance(ev, ModelLevels):
                    switched = ev
            if switched is not None and all(
                    "validating" not in (engine.slots[r].model or "validating")
                    for r in ("transcription", "diarization")):
                break
        assert switched is not None and not switched.error, switched
        levels_in_use = dict(switched.levels)
        # what the chain chose on this CPU (its own tests check how it chooses)
        assert levels_in_use["whisper"] in ct2_chain.WHISPER_LEVELS
        # the workers were usable on the reference levels before the chain finished
        first: dict[str, str] = {}
        for _, ev in seen:
            if isinstance(ev, WorkerStatus) and ev.state == WorkerState.READY:
                first.setdefault(ev.role, ev.model)
        assert first["transcription"] == "whisper-base float32 (validating)"
        assert first["diarization"] == "seg fp32 (validating) + CAM++ fp32 (validating)"
        switch_t = next(t for t, ev in seen if isinstance(ev, ModelLevels))
        assert max(ready_at.values()) < switch_t
        # what the gauges show now: the validated levels per worker
        shown = {m.role: m.model for m in engine.metrics().workers}
        assert shown["transcription"] == f"whisper-base {levels_in_use['whisper']}"
        assert shown["diarization"] == (f"seg {levels_in_use['segmentation']} + CAM++ "
                                        f"{levels_in_use['embedding']}")
        # and the engine still transcribes after the switch
        sid = engine.open_file(str(clip_path("ptbr_fleurs_000")))
        words = []
        done = time.monotonic() + 120
        while time.monotonic() < done:
            for ev in engine.poll(0.2):
                if isinstance(ev, TranscriptResult) and ev.stream_id == sid:
                    words += [w for s in ev.segments for w in s.text.split()]
                    if ev.final:
                        done = 0
        assert len(words) > 10
    assert (models / "cache" / "whisper.manifest.json").is_file()


def test_der_with_the_chosen_levels_within_a_point_of_fp32(tmp_path: Path) -> None:
    """The pyannote sample: DER (no collar) with the levels in use vs all-FP32."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    seg = MODELS / "diarization" / "segmentation-3.0.onnx"
    emb = MODELS / "diarization" / "campplus.onnx"
    chosen = {k: levels.choose(CFG, k, p, DIARIZATION_FILES[p.name][0]).path
              for k, p in (("segmentation", seg), ("embedding", emb))}
    # the CAM++ FP16 the chain picks on this machine (it can be skipped as "slower" when a
    # loaded machine times it, so it is also made here: its accuracy is what is tested)
    fp16 = tmp_path / "campplus.fp16.onnx"
    onnx_convert.convert_fp16("embedding", emb, fp16)
    audio = load_audio(clip_path("en_pyannote_sample"))
    ref = to_annotation(read_rttm_turns(
        ROOT / "tests" / "data" / "rttm" / "en_pyannote_sample.rttm"))
    ders = []
    for s, e in ((seg, emb), (chosen["segmentation"], chosen["embedding"]), (seg, fp16)):
        hyp = to_annotation(Diarizer(s, e)(audio, 16000))
        ders.append(100 * DiarizationErrorRate(collar=0.0)(ref, hyp))
    print(f"DER fp32 {ders[0]:.2f}%  chosen levels {ders[1]:.2f}%  CAM++ fp16 {ders[2]:.2f}%")
    assert abs(ders[1] - ders[0]) <= 1.0 and abs(ders[2] - ders[0]) <= 1.0


def test_models_command_prints_every_level() -> None:
    proc = run_cli("models")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for word in ("whisper:", "segmentation:", "embedding:", "float16", *levels.ONNX_LEVELS,
                 *levels.WHISPER_LEVELS, "speed", "agree"):
        assert word in out
    assert out.count("in use:") == 3
    js = run_cli("models", "--json")
    data = json.loads(js.stdout)
    assert f"in use: {data[0]['in_use']}" in out  # the text and the JSON agree
    assert [d["model_kind"] for d in data] == ["whisper", "segmentation", "embedding"]
    for d in data:
        assert d["in_use"] in {lv["level"] for lv in d["levels"] if lv["result"] == "accepted"}
