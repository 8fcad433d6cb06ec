"""Text to speech on our kernels against Transformers' generate(return_audio=True): the thinker's answer, every
code of every frame, the waveform; the talker's and code predictor's activations on the inputs Transformers
gave them; seeded sampling; and the mistakes people make."""

import json
import shutil

import numpy as np
import pytest
from omni_lab.compare.audio import snr_db
from omni_lab.gpu import runtime
from omni_lab.models.code_predictor import CodePredictor
from omni_lab.models.code_predictor import hf_activations as hf_code_predictor
from omni_lab.models.component import ModelInputError
from omni_lab.models.config import ConfigError
from omni_lab.models.speech import Speech, hf_speak
from omni_lab.models.talker import Talker, capture_by_name
from omni_lab.models.talker import hf_activations as hf_talker
from omni_lab.models.tiny_omni import CODEC_RANGE, NUM_CODE_GROUPS, build_tiny_omni
from omni_lab.reference import load_hf_model

PRESETS = [("tiny", 0), ("tiny-dense", 1)]
MAX_NEW_TOKENS, MAX_FRAMES = 8, 40
MIN_COSINE = 0.99999


def chat_ids(path, text="Привет мир"):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    return np.asarray(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                              tokenize=True)["input_ids"], np.int64)


@pytest.fixture(scope="module", params=PRESETS, ids=lambda p: f"{p[0]}-seed{p[1]}")
def spoken(request, tmp_path_factory, rt):
    """A tiny Omni checkpoint, its float32 HF model, ours, the prompt, and both sides' greedy speech."""
    preset, seed = request.param
    path = build_tiny_omni(tmp_path_factory.mktemp(preset) / "ckpt", seed=seed, preset=preset)
    model = load_hf_model(path, "float32")
    ids = chat_ids(path)
    hf = hf_speak(model, ids, max_new_tokens=MAX_NEW_TOKENS, max_frames=MAX_FRAMES)
    ours = Speech(path, max_len=128, progress=False)
    result = ours.speak(ids, max_new_tokens=MAX_NEW_TOKENS, max_frames=MAX_FRAMES)
    return dict(path=path, model=model, ids=ids, hf=hf, ours=ours, result=result)


def test_text_and_every_codebook_equal_transformers(spoken):
    answer, codes, _ = spoken["hf"]
    r = spoken["result"]
    assert r.text_ids == answer
    assert codes.shape[1] == NUM_CODE_GROUPS and len(codes) >= 5
    assert r.codes.shape == codes.shape, f"{len(r.codes)} frames against Transformers' {len(codes)}"
    agree = (r.codes == codes).mean(axis=0)
    assert (agree == 1).all(), f"codebook agreement {agree}"


def test_waveform_matches_transformers(spoken):
    *_, wav = spoken["hf"]
    ours = spoken["ours"].vocode(spoken["result"].codes)
    assert ours.shape == wav.shape
    assert snr_db(ours, wav) >= 60


def test_talker_prompt_and_activations_match(spoken):
    """The talker's prompt as ours builds it against the inputs_embeds generate gave the talker, then every
    talker activation of one forward over that prompt (routing: the same experts)."""
    model, ours, ids = spoken["model"], spoken["ours"], spoken["ids"]
    names = [a.name for a in ours.talker.activations(1)]
    caught = capture_by_name(model.talker, "talker", ["talker.model.inputs_embeds"],
                             lambda: hf_speak(model, ids, max_new_tokens=MAX_NEW_TOKENS, max_frames=2))
    hf_prompt = caught["talker.model.inputs_embeds"]
    speaker = ours.cfg.speaker_id("Ethan")
    prompt, *_ = ours.talker_prompt(ids, len(spoken["result"].text_ids), speaker)
    assert prompt.shape == hf_prompt.shape
    assert cosine(prompt.numpy(), hf_prompt) >= MIN_COSINE
    mine = ours.talker.forward(embeds=runtime().upload(hf_prompt), start=0, taps=names)
    theirs = hf_talker(model, names, hf_prompt)
    check_all(names, mine, theirs)


def test_code_predictor_activations_match(spoken):
    """The code predictor's first prefill in generate ([talker hidden, code 0 embedding]), through ours."""
    model, ours, ids = spoken["model"], spoken["ours"], spoken["ids"]
    cp_inputs = capture_by_name(model.talker.code_predictor, "talker.code_predictor",
                                ["talker.code_predictor.model.inputs_embeds"],
                                lambda: hf_speak(model, ids, max_new_tokens=MAX_NEW_TOKENS, max_frames=2))
    x = cp_inputs["talker.code_predictor.model.inputs_embeds"]
    assert x.shape == (2, ours.code_predictor.cfg.hidden_size)
    names = [a.name for a in ours.code_predictor.activations(2)]
    assert names[-1] == "talker.code_predictor.lm_head.0"
    mine = ours.code_predictor.forward(embeds=runtime().upload(x), taps=names)
    check_all(names, mine, hf_code_predictor(model, names, x))


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def check_all(names, mine, theirs):
    assert set(theirs) == set(names)
    for n in names:
        if n.endswith(".mlp.router"):
            k = mine[n].shape[1] // 2
            assert np.array_equal(mine[n][:, :k], theirs[n][:, :k]), f"{n}: other experts chosen"
            assert cosine(mine[n][:, k:], theirs[n][:, k:]) >= MIN_COSINE, n
        else:
            assert mine[n].shape == theirs[n].shape, n
            assert cosine(mine[n], theirs[n]) >= MIN_COSINE, f"{n}: cosine {cosine(mine[n], theirs[n])}"


def test_a_frame_is_one_recorded_step_replayed(spoken):
    """After the first frame records it, every frame replays the same plan: nothing is re-encoded."""
    ours = spoken["ours"]
    plans = [k for k in ours.talker._plans if k[0] == "frame"]
    assert plans == [("frame", None)]


def test_sampling_is_seeded_and_valid(spoken):
    ours, ids = spoken["ours"], spoken["ids"]
    a = ours.speak(ids, max_new_tokens=MAX_NEW_TOKENS, max_frames=12, greedy=False, seed=3).codes
    b = ours.speak(ids, max_new_tokens=MAX_NEW_TOKENS, max_frames=12, greedy=False, seed=3).codes
    c = ours.speak(ids, max_new_tokens=MAX_NEW_TOKENS, max_frames=12, greedy=False, seed=4).codes
    greedy = spoken["result"].codes
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c[:len(a)]) or len(a) != len(c)
    assert not np.array_equal(a, greedy[:len(a)])
    assert ((a >= 0) & (a < CODEC_RANGE)).all()  # the suppressed ids (talker vocab - 1024 ..) never come out


def test_streamed_frames_are_the_spoken_ones(spoken):
    ours, ids = spoken["ours"], spoken["ids"]
    frames = list(ours.frames(ids, max_new_tokens=MAX_NEW_TOKENS, max_frames=6))
    assert np.array_equal(np.array(frames), spoken["result"].codes[:6])


def test_mistakes_get_clear_errors(spoken, tmp_path):
    ours, ids = spoken["ours"], spoken["ids"]
    with pytest.raises(ModelInputError, match="unknown speaker 'Nobody'.*chelsie, ethan"):
        ours.speak(ids, speaker="Nobody")
    user_only = ids[:np.flatnonzero(ids == ours.cfg.im_start)[-1]]  # the assistant header cut off
    with pytest.raises(ModelInputError, match="no assistant turn"):
        ours.speak(user_only)
    with pytest.raises(ModelInputError, match="nothing to speak"):
        ours.speak(ids, max_new_tokens=1)
    with pytest.raises(ModelInputError, match="exceed its cache"):
        ours.speak(ids, max_frames=1000)
    # A checkpoint without a talker (the thinker-only release) cannot speak, and says so.
    cut = tmp_path / "thinker_only"
    shutil.copytree(spoken["path"], cut)
    cfg = json.loads((cut / "config.json").read_text())
    del cfg["talker_config"]
    (cut / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="no talker"):
        Speech(cut, progress=False)


def test_talker_and_code_predictor_configs():
    """Every talker layer is a sparse block whatever the thinker's rule would say; the code predictor's
    heads are named per codebook."""
    d = {"model_type": "qwen3_omni_moe", "talker_config": {
        "codec_eos_token_id": 7,
        "text_config": dict(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=3,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=8, rms_norm_eps=1e-6,
                            moe_intermediate_size=8, num_experts=4, num_experts_per_tok=2, mlp_only_layers=[1],
                            decoder_sparse_step=2, shared_expert_intermediate_size=12),
        "code_predictor_config": dict(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, rms_norm_eps=1e-6)}}
    cfg = Talker.config_from(d)
    assert all(cfg.is_moe(i) for i in range(3)) and cfg.eos_ids == (7,)
    assert CodePredictor.head_name(2) == "talker.code_predictor.lm_head.0"
    assert CodePredictor.activation_specs(CodePredictor.config_from(d), 5)[-1].name == "talker.code_predictor.lm_head.3"
    with pytest.raises(ConfigError, match="model_type"):
        Talker.config_from({"model_type": "qwen3"})


def test_speak_command_writes_the_wav_and_reports_json(spoken, tmp_path, capsys):
    """`omni-lab speak --json` on a token prompt: the same answer and codes as the API, a readable wav; and
    --stream writes the same waveform chunk by chunk."""
    import soundfile as sf

    from omni_lab.cli import main

    ids = ",".join(map(str, spoken["ids"]))
    common = ["speak", "--model", str(spoken["path"]), "--prompt-ids", ids, "--greedy", "--max-new-tokens",
              str(MAX_NEW_TOKENS), "--max-frames", str(MAX_FRAMES), "--json"]
    assert main(common + ["--out", str(tmp_path / "a.wav")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["text_ids"] == spoken["result"].text_ids
    assert np.array_equal(np.array(out["codes"]), spoken["result"].codes)
    whole, rate = sf.read(tmp_path / "a.wav", dtype="float32")
    assert rate == 24000 and np.array_equal(whole, spoken["ours"].vocode(spoken["result"].codes))
    assert main(common + ["--out", str(tmp_path / "b.wav"), "--stream"]) == 0
    streamed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert streamed["first_audio_seconds"] is not None and streamed["first_audio_seconds"] <= streamed["seconds"]
    assert np.array_equal(sf.read(tmp_path / "b.wav", dtype="float32")[0], whole)
    assert main(common + ["--out", str(tmp_path / "c.wav"), "--speaker", "Nobody"]) == 2
    assert "unknown speaker" in capsys.readouterr().err and not (tmp_path / "c.wav").exists()


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory):
    """A spoken question: espeak-ng's "Привет мир" at 22.05 kHz where it is installed, else a vowel-like
    synthetic clip (a 140 Hz pulse train through two formants) at 44.1 kHz stereo."""
    import shutil
    import subprocess

    import soundfile as sf

    path = tmp_path_factory.mktemp("question") / "question.wav"
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-w", str(path), "Привет мир"], check=True, capture_output=True)
        return path
    rate = 44100
    t = np.arange(int(1.2 * rate)) / rate
    voice = np.sign(np.sin(2 * np.pi * 140 * t)) * (np.sin(2 * np.pi * 700 * t) + 0.5 * np.sin(2 * np.pi * 1200 * t))
    sf.write(path, np.stack([voice, voice], 1).astype(np.float32) * 0.2, rate)
    return path


def test_a_spoken_answer_to_a_spoken_question(spoken, question_wav):
    """Audio in, speech out: the recording through the audio encoder into the thinker, whose hidden states
    at the audio placeholders reach the talker through hidden_projection; the answer and every code of
    every frame equal Transformers', the waveform at 60 dB or more."""
    from omni_lab.models.audio_in import audio_prompt_ids, load_audio_inputs

    path, ours = spoken["path"], spoken["ours"]
    features = load_audio_inputs(path, [question_wav], max_tokens=64)
    ids = audio_prompt_ids(path, [f.shape[1] for f in features], "Ответь")
    assert np.isin(ids, ours.cfg.audio).sum() > 0
    answer, codes, wav = hf_speak(spoken["model"], ids, max_new_tokens=MAX_NEW_TOKENS, max_frames=12,
                                  features=features)
    r = ours.speak(ids, max_new_tokens=MAX_NEW_TOKENS, max_frames=12, features=features)
    assert r.text_ids == answer
    assert r.codes.shape == codes.shape and (r.codes == codes).all()
    assert snr_db(ours.vocode(r.codes), wav) >= 60
    # The heard rows matter: the same prompt without its audio is refused, not spoken as text.
    with pytest.raises(ModelInputError, match="no features"):
        ours.speak(ids, max_new_tokens=MAX_NEW_TOKENS, max_frames=2)


def test_speak_command_answers_an_audio_file(spoken, question_wav, tmp_path, capsys):
    from omni_lab.cli import main
    from omni_lab.models.audio_in import audio_prompt_ids, load_audio_inputs

    path = spoken["path"]
    assert main(["speak", "--model", str(path), "--audio", str(question_wav), "--prompt", "Ответь", "--greedy",
                 "--max-new-tokens", str(MAX_NEW_TOKENS), "--max-frames", "12", "--json",
                 "--out", str(tmp_path / "answer.wav")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    features = load_audio_inputs(path, [question_wav], max_tokens=64)
    ids = audio_prompt_ids(path, [f.shape[1] for f in features], "Ответь")
    answer, codes, _ = hf_speak(spoken["model"], ids, max_new_tokens=MAX_NEW_TOKENS, max_frames=12, features=features)
    assert out["prompt_ids"] == ids.tolist() and out["text_ids"] == answer
    assert np.array_equal(np.array(out["codes"]), codes)
