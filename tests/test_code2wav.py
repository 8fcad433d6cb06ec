"""code2wav on our kernels against Transformers' Qwen3OmniMoeCode2Wav (float32, the same BF16 weights):
every activation, module by module, and the waveform, on tiny vocoders whose every module moves it."""

import numpy as np
import pytest

from omni_lab.models.code2wav import PREFIX, Code2Wav, hf_activations
from omni_lab.models.component import ModelInputError
from omni_lab.models.tiny_omni import build_tiny_omni
from omni_lab.reference import load_hf_model


@pytest.fixture(scope="module", params=[("tiny", 0), ("tiny-dense", 1)], ids=lambda p: f"{p[0]}-seed{p[1]}")
def vocoder(request, tmp_path_factory):
    preset, seed = request.param
    path = build_tiny_omni(tmp_path_factory.mktemp(preset) / "ckpt", seed=seed, preset=preset)
    return Code2Wav.load(path, max_len=64), load_hf_model(path, "float32")


def random_codes(model, frames, seed=0):
    cfg = model.cfg
    return np.random.default_rng(seed).integers(0, cfg.codebook_size, (cfg.num_quantizers, frames), dtype=np.int64)


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def snr_db(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ours - ref) ** 2), 1e-300)))


@pytest.mark.parametrize("frames", [7, 12])
def test_every_activation_matches_transformers(vocoder, frames):
    model, hf = vocoder
    codes = random_codes(model, frames, seed=frames)
    names = [a.name for a in model.activations(frames)]
    ours = model.forward(codes, taps=names)
    ref = hf_activations(hf, names, codes)
    assert set(ref) == set(names)
    for n in names:
        assert ours[n].shape == ref[n].shape, n
        assert cosine(ours[n], ref[n]) >= 0.99999, f"{n}: cosine {cosine(ours[n], ref[n]):.7f}"
    assert snr_db(ours[PREFIX], ref[PREFIX]) >= 60.0
    # Untapped, the residual adds are fused into the convs: the same waveform.
    plain = model.forward(codes)[PREFIX]
    assert snr_db(plain, ref[PREFIX]) >= 60.0 and np.abs(plain).max() > 0.05


def test_codes_as_a_user_saves_them_and_bad_codes(vocoder):
    model, _ = vocoder
    codes = random_codes(model, 5)
    np.testing.assert_array_equal(model.forward(codes.T)[PREFIX], model.forward(codes)[PREFIX])  # [T, 16]
    q, n = model.cfg.num_quantizers, model.cfg.codebook_size
    bad = codes.copy()
    bad[3, 2] = n
    with pytest.raises(ModelInputError, match=rf"code {n} at codebook 3, frame 2 is outside \[0, {n}\)"):
        model.forward(bad)
    with pytest.raises(ModelInputError, match=rf"codes must be \[{q}, frames\] or \[frames, {q}\] \({q} codebooks\)"):
        model.forward(codes[:4])
    with pytest.raises(ModelInputError, match="zero frames"):
        model.forward(codes[:, :0])
    with pytest.raises(ModelInputError, match="must be integers"):
        model.forward(codes.astype(np.float32))


@pytest.mark.parametrize("frames,chunk,left", [(23, 5, 3), (17, 4, 6), (12, 12, 2), (9, 20, 4)])
def test_chunked_and_streamed_equal_transformers_chunked_decode(vocoder, frames, chunk, left):
    """Chunks of `chunk` frames with `left` frames of context (the context cuts inside a chunk's receptive
    field, so each chunk really is decoded on its own), one-shot when the chunk covers everything."""
    from omni_lab.models.code2wav import hf_chunked_decode

    model, hf = vocoder
    codes = random_codes(model, frames, seed=frames + chunk)
    ref = hf_chunked_decode(hf, codes, chunk, left)
    ours = model.chunked_decode(codes, chunk, left)
    assert ours.shape == ref.shape and snr_db(ours, ref) >= 60.0
    # Frames arriving one at a time, then in uneven blocks: the same pieces.
    one = list(model.stream(iter(codes.T), chunk, left))
    blocks = list(model.stream([codes.T[:3], codes.T[3:4], codes.T[4:]], chunk, left))
    assert [len(p) for p in one] == [len(p) for p in blocks]
    np.testing.assert_array_equal(np.concatenate(one), ours)
    np.testing.assert_array_equal(np.concatenate(blocks), ours)
    if frames <= chunk:
        assert len(one) == 1  # one chunk is the one-shot decode, the same dispatches
        np.testing.assert_array_equal(ours, model.forward(codes)[PREFIX])


@pytest.mark.parametrize("frames,ctx", [(9, 4), (20, 14), (10, 3)])
def test_a_decode_without_its_first_samples_skips_only_what_nobody_reads(vocoder, frames, ctx):
    """forward(drop=d) crops each decoder block's input to the steps the samples from d on read (first_reads):
    those samples equal the uncropped decode's (up to rounding: the convs may pick other tiles at the
    cropped lengths). That first_reads is right is checked on Transformers' module itself: a change to a
    block's input one step before its first read leaves the kept samples as they are, at that step it
    changes them, so the crops cut as deep as they may and no deeper."""
    import torch

    model, hf = vocoder
    codes = random_codes(model, frames, seed=frames + ctx)
    drop = ctx * model.cfg.samples_per_frame
    full = model.forward(codes)[PREFIX][drop:]
    crops, final, keep = model.crops(drop)
    assert final > 0 and keep < drop
    if ctx >= 14:  # a context long enough for every block of the tiny vocoders to be cropped
        assert min(crops) > 0, crops
    cropped = model.forward(codes, drop=drop)[PREFIX]
    assert cropped.shape == full.shape and snr_db(cropped, full) >= 100.0

    decoder = hf.code2wav.decoder  # [conv, blocks..., SnakeBeta, conv]: first_reads' stages are 1..n+1
    outs = {}
    grabs = [m.register_forward_hook(lambda m, args, out, k=k: outs.__setitem__(k, out[0].clone()))
             for k, m in enumerate(decoder)]

    def decode_with(stage=None, step=None) -> dict:
        def bump(module, args):
            x = args[0].clone()
            x[..., step] += 3.0
            return (x,)
        hook = decoder[stage].register_forward_pre_hook(bump) if stage is not None else None
        with torch.no_grad():
            hf.code2wav(torch.as_tensor(codes[None]))
        if hook is not None:
            hook.remove()
        return dict(outs)

    try:
        ref = decode_with()
        firsts = model.first_reads(drop) + [drop]  # and the waveform's first kept sample
        for stage, (first, then) in enumerate(zip(firsts, firsts[1:]), start=1):
            if first > 0:  # a step before the first read: no kept sample moves, not by a bit
                got = decode_with(stage, first - 1)
                assert torch.equal(got[len(decoder) - 1][..., drop:], ref[len(decoder) - 1][..., drop:]), \
                    f"stage {stage}: step {first - 1} is read"
            # the first read moves the next stage's first read (end to end, through a dozen random weights,
            # it may sink below float32 rounding); the final SnakeBeta's reaches the waveform through its conv
            nxt = stage if stage < len(firsts) - 1 else len(decoder) - 1
            got = decode_with(stage, first)
            assert not torch.equal(got[nxt][..., then:], ref[nxt][..., then:]), f"stage {stage}: step {first} is not read"
    finally:
        for g in grabs:
            g.remove()
    with pytest.raises(ModelInputError, match="drop must be in"):
        model.forward(codes, taps=[PREFIX], drop=drop)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return build_tiny_omni(tmp_path_factory.mktemp("cli") / "ckpt", seed=2, preset="tiny")


def test_vocode_cli_writes_the_waveform(tiny_ckpt, tmp_path, capsys):
    import soundfile as sf

    from omni_lab.cli import main
    from omni_lab.models.code2wav import SAMPLE_RATE

    model = Code2Wav.load(tiny_ckpt, max_len=64, progress=False)
    codes = random_codes(model, 30, seed=4)
    np.save(tmp_path / "codes.npy", codes.T)  # [frames, 16], as a user may save them
    out = tmp_path / "speech.wav"
    assert main(["vocode", "--model", str(tiny_ckpt), "--codes", str(tmp_path / "codes.npy"), "--out", str(out)]) == 0
    assert "real-time factor" in capsys.readouterr().out
    wave, rate = sf.read(out, dtype="float32")
    assert rate == SAMPLE_RATE
    np.testing.assert_array_equal(wave, model.forward(codes)[PREFIX])  # float wav: every sample as decoded
    streamed = tmp_path / "streamed.wav"
    assert main(["vocode", "--model", str(tiny_ckpt), "--codes", str(tmp_path / "codes.npy"), "--out", str(streamed),
                 "--stream", "--chunk-size", "8", "--left-context", "3"]) == 0
    assert "first audio after" in capsys.readouterr().out
    np.testing.assert_array_equal(sf.read(streamed, dtype="float32")[0], model.chunked_decode(codes, 8, 3))


def test_vocode_cli_bad_input_names_the_argument(tiny_ckpt, tmp_path, capsys):
    from omni_lab.cli import main

    model = Code2Wav.load(tiny_ckpt, max_len=64, progress=False)
    codes = random_codes(model, 6)
    out = tmp_path / "speech.wav"
    cases = {
        "range": (np.where(codes == codes.max(), model.cfg.codebook_size + 5, codes), "is outside"),
        "groups": (codes[:5], "16 codebooks"),
        "empty": (codes[:, :0], "zero frames"),
        "float": (codes.astype(np.float32), "must be an integer array"),
    }
    for name, (bad, message) in cases.items():
        np.save(tmp_path / f"{name}.npy", bad)
        assert main(["vocode", "--model", str(tiny_ckpt), "--codes", str(tmp_path / f"{name}.npy"), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err, name
    (tmp_path / "text.npy").write_text("1,2,3")
    with open(tmp_path / "objects.npy", "wb") as f:  # an object array is a pickle inside .npy: never loaded
        np.save(f, np.array([{"codes": 1}], dtype=object), allow_pickle=True)
    for name in ("text", "objects"):
        assert main(["vocode", "--model", str(tiny_ckpt), "--codes", str(tmp_path / f"{name}.npy"), "--out", str(out)]) == 2
        assert f"--codes {tmp_path / f'{name}.npy'}: not a numpy .npy array of integers" in capsys.readouterr().err
    np.save(tmp_path / "good.npy", codes)
    missing = tmp_path / "no" / "such" / "speech.wav"
    assert main(["vocode", "--model", str(tiny_ckpt), "--codes", str(tmp_path / "good.npy"), "--out", str(missing)]) == 2
    assert f"--out {missing}: the folder {missing.parent} does not exist" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("*.wav*"))  # nothing half-written under any name


def test_extract_and_compare_the_vocoder_from_the_cli(tiny_ckpt, tmp_path, capsys):
    import json

    from omni_lab.cli import main

    model = Code2Wav.load(tiny_ckpt, max_len=64, progress=False)
    np.save(tmp_path / "codes.npy", random_codes(model, 9, seed=9))
    for backend in ("hf", "wgpu"):
        assert main(["extract", "--model", str(tiny_ckpt), "--codes", str(tmp_path / "codes.npy"), "--backend", backend,
                     "--out", str(tmp_path / f"{backend}.npz")]) == 0
    ours, ref = np.load(tmp_path / "wgpu.npz"), np.load(tmp_path / "hf.npz")
    assert set(ours.files) == set(ref.files) and PREFIX in ours.files and ours[PREFIX].ndim == 1
    assert snr_db(ours[PREFIX], ref[PREFIX]) >= 60.0
    out = tmp_path / "report"
    assert main(["compare", "--model", str(tiny_ckpt), "--codes", str(tmp_path / "codes.npy"), "--out", str(out),
                 "--references", str(tmp_path / "refs")]) == 0
    assert len(list((tmp_path / "refs").glob("*-code2wav-float32-*/manifest.json"))) == 1
    rows = {r["name"]: r for r in json.loads((out / "report.json").read_text())["activations"]}
    assert rows[PREFIX]["kind"] == "waveform" and rows[PREFIX]["snr_db"] >= 60.0
    assert rows["code2wav.decoder.1.block.2.conv1"]["layout"] == "CT"
    assert all(r["within_bounds"] for r in rows.values())
    assert (out / "code2wav_ours.wav").is_file() and "<audio" in (out / "index.html").read_text()
