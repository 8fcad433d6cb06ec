"""The `omni-lab` command: everything a notebook does, headless."""

from __future__ import annotations

import argparse
import json
import sys
import time


def cmd_doctor(args) -> int:
    from .gpu import NoAdapterError, open_gpu

    try:
        gpu = open_gpu()
    except NoAdapterError as e:
        print(f"omni-lab doctor: {e}", file=sys.stderr)
        return 2
    info = gpu.describe()
    if info["backend"] == "OpenGL":
        # wgpu's GL backend runs compute shaders, but not with the features and limits these kernels are
        # written for (Vulkan's shader-f16, subgroups, storage bindings): the set-up installs lavapipe.
        print(f"omni-lab doctor: the only adapter is OpenGL ({info['adapter']}); omni_lab needs Vulkan, Metal or "
              "DX12: on Debian `apt-get install mesa-vulkan-drivers libvulkan1` gives the lavapipe software adapter",
              file=sys.stderr)
        return 2
    if args.quiet:
        return 0
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"adapter       {info['adapter']} ({info['description']})")
    print(f"backend       {info['backend']}, type {info['adapter_type']}, vendor {info['vendor']}")
    print(f"tuning        {info['tuning']}: {info['tuning_basis']}")
    print(f"features      {', '.join(info['features']) or 'none of shader-f16, subgroup, timestamp-query'}")
    for k, v in info["limits"].items():
        print(f"  {k:40s} {v:>14,}")
    if info["adapter_type"] == "CPU":
        print("note          this is a software adapter (lavapipe): correct, but slow; use a GPU for speed")
    return 0


def cmd_selfcheck(args) -> int:
    from .ops.selfcheck import entry_point_report, run_selfcheck

    t0 = time.perf_counter()
    results = run_selfcheck()
    points = entry_point_report(results)
    checked = sum(p["case"] is not None for p in points)
    ok = all(p["ok"] for p in points) and all(r.ok for r in results)
    if args.json:
        print(json.dumps({"ok": ok, "checked": checked, "total": len(points), "entry_points": points}, indent=2))
        return 0 if ok else 1
    for p in points:
        if p["case"] is None:
            print(f"FAIL {p['kernel']:26s} unchecked: {p['error']}")
            continue
        nmse = "      n/a" if p["nmse"] is None else f"{p['nmse']:9.2e}"
        bound = "exact" if p["bound"] == 0 else f"bound {p['bound']:.0e}"
        print(f"{'ok  ' if p['ok'] else 'FAIL'} {p['kernel']:26s} nmse {nmse} ({bound})  {p['case']}")
    for r in results:
        if r.error:
            print(f"FAIL {r.op}: {r.error}")
    n_ok = sum(p["ok"] for p in points)
    print(f"{checked} of {len(points)} entry points checked, {n_ok} match their numpy reference "
          f"({len(results)} cases, {time.perf_counter() - t0:.1f} s)")
    return 0 if ok else 1


def _prompt(args):
    from .workbench import prompt_ids

    return prompt_ids(args.model, prompt=args.prompt, ids=args.prompt_ids, chat=getattr(args, "chat", False))


def _codes(path: str):
    """Codec codes from an .npy file (integers, [16, frames] or [frames, 16]); never a pickle."""
    import numpy as np

    try:
        codes = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"--codes {path}: no such file") from None
    except (ValueError, OSError) as e:  # not .npy, or an object array (a pickle)
        raise ValueError(f"--codes {path}: not a numpy .npy array of integers ({e})") from None
    if not isinstance(codes, np.ndarray) or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"--codes {path}: codes must be an integer array, got {getattr(codes, 'dtype', type(codes))}")
    return codes


def _audio(args, max_tokens: int = 2048):
    """Mel features of each --audio file (models/audio_in.py: read, resampled, the checkpoint's extractor)."""
    from .models.audio_in import load_audio_inputs

    return load_audio_inputs(args.model, args.audio, max_tokens)


def _inputs(args):
    """(the component's inputs, the component): codes and code2wav with --codes; a spoken prompt (ids, speaker,
    limits) for the talker, the code predictor and the speech pipeline; with --audio the thinker's chat prompt
    of the audios and --prompt's text with their features (the encoder and the thinker in one comparison), or
    with --component audio_encoder the features alone; else prompt ids."""
    if getattr(args, "codes", None) is not None:
        return _codes(args.codes), args.component or "code2wav"
    if args.component and _spoken(args):
        from .workbench import model_inputs, prompt_ids

        # As `speak` reads it: a text prompt is a user turn, which the chat template ends with the assistant's.
        ids = prompt_ids(args.model, prompt=args.prompt, ids=args.prompt_ids, chat=args.prompt is not None)
        spoken = {"input_ids": ids, "speaker": args.speaker, "max_new_tokens": args.max_new_tokens,
                  "max_frames": args.max_frames}
        return model_inputs(args.model, spoken, args.component), args.component
    if getattr(args, "image", None):
        return _media(args)
    if getattr(args, "audio", None):
        feats = _audio(args)
        if args.component == "audio_encoder":
            return {"input_features": feats}, "audio_encoder"
        if args.prompt_ids is not None:
            raise ValueError("--audio builds its prompt with the chat template: give --prompt TEXT, not --prompt-ids")
        from .models.audio_in import audio_prompt_ids

        ids = audio_prompt_ids(args.model, [f.shape[1] for f in feats], args.prompt)
        return {"input_ids": ids, "input_features": feats}, args.component or "thinker"
    return _prompt(args), args.component


def _media(args, max_tokens: int = 2048):
    """(inputs, component) of a prompt with --image files (and --audio files): the thinker's chat prompt of the
    audios, the images and --prompt's text with their features and patches, or with --component vision the
    patches alone (models/image_in.py: read with Pillow, the checkpoint's image processor)."""
    from .models.image_in import load_image_inputs, media_prompt_ids

    pv, grid = load_image_inputs(args.model, args.image)  # the models are sized to the patches they get
    component = getattr(args, "component", None)  # generate has none: the thinker
    if component == "vision":
        if args.audio:
            raise ValueError("--component vision reads images only: drop --audio")
        return {"pixel_values": pv, "image_grid_thw": grid}, "vision"
    if args.prompt_ids is not None:
        raise ValueError("--image builds its prompt with the chat template: give --prompt TEXT, not --prompt-ids")
    feats = _audio(args, max_tokens) if args.audio else None
    ids = media_prompt_ids(args.model, args.prompt, [f.shape[1] for f in feats or []], grid)
    inputs = {"input_ids": ids, **({"input_features": feats} if feats else {}), "pixel_values": pv,
              "image_grid_thw": grid}
    return inputs, component or "thinker"


def _spoken(args) -> bool:
    """Whether the component reads a spoken prompt (the talker, the code predictor: models/speech_taps.py)."""
    from .models import registry
    from .workbench import model_config

    entry = registry.entry_for(model_config(args.model), args.component, args.model)
    return entry.inputs == registry.SPOKEN_PROMPT


def cmd_tiny(args) -> int:
    if args.arch == "omni":
        from .models.tiny_omni import build_tiny_omni

        out = build_tiny_omni(args.dir, seed=args.seed, preset=args.preset)
    else:
        from .models.tiny import build_tiny_qwen3

        out = build_tiny_qwen3(args.dir, seed=args.seed, preset=args.preset)
    print(f"wrote {out}")
    return 0


def cmd_generate(args) -> int:
    from .gpu import tuning

    with tuning.override(**({"q8_matvec_path": args.q8_path} if args.q8_path else {})):
        return _generate(args)


def _generate(args) -> int:
    from .models.sampling import Sampler
    from .workbench import load_ours, tokenizer_for

    sampler = None if args.greedy else Sampler(args.temperature, args.top_k, args.top_p, args.seed)
    if args.image:  # the thinker with images (and audios): the registry's entry for those inputs
        inputs, _ = _media(args)
        ids = inputs["input_ids"]
        media = list(inputs.values())[1:]
        n = max(len(ids) + args.max_new_tokens, inputs["pixel_values"].shape[0])
        model = load_ours(args.model, max_len=n, progress=not args.json, inputs=list(inputs))
        t0 = time.perf_counter()
        tokens = model.generate(ids, *media, args.max_new_tokens, sampler)
    elif args.audio:
        from .models.audio_in import ThinkerWithAudio, audio_prompt_ids

        if args.prompt_ids:
            raise ValueError("--audio builds its prompt with the chat template: give --prompt TEXT, not --prompt-ids")
        feats = _audio(args)
        ids = audio_prompt_ids(args.model, [f.shape[1] for f in feats], args.prompt)
        model = ThinkerWithAudio.load(args.model, max_len=len(ids) + args.max_new_tokens, progress=not args.json)
        t0 = time.perf_counter()
        tokens = model.generate(ids, feats, args.max_new_tokens, sampler)
    else:
        ids = _prompt(args)
        model = load_ours(args.model, max_len=len(ids) + args.max_new_tokens, progress=not args.json)
        t0 = time.perf_counter()
        tokens = model.generate(ids, args.max_new_tokens, sampler)
    seconds = time.perf_counter() - t0
    try:
        text = tokenizer_for(args.model).decode(tokens, skip_special_tokens=False)
    except ValueError:
        text = None
    if args.json:
        print(json.dumps({"prompt_ids": ids.tolist(), "tokens": tokens, "text": text, "seconds": seconds,
                          "sampling": "greedy" if sampler is None else {
                              "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed}}))
    else:
        from .text import printable

        print(printable(text) if text is not None else tokens)
    return 0


def cmd_extract(args) -> int:
    from .workbench import extract, save_npz

    inputs, component = _inputs(args)
    acts = extract(args.model, inputs, args.backend, args.dtype, component=component)
    save_npz(args.out, acts)
    print(f"wrote {len(acts)} activations of {component or 'the model'} to {args.out}")
    return 0


def cmd_vocode(args) -> int:
    from pathlib import Path

    import numpy as np

    from .models.code2wav import SAMPLE_RATE
    from .report.audio import write_wav
    from .workbench import load_ours, model_inputs

    out = Path(args.out)
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")
    codes = model_inputs(args.model, _codes(args.codes), "code2wav")["codes"]
    frames = codes.shape[1]
    model = load_ours(args.model, max_len=max(frames, args.chunk_size + args.left_context), progress=False,
                      component="code2wav")
    t0 = time.perf_counter()
    if args.stream:
        pieces, first = [], None
        for piece in model.stream(iter(codes.T), args.chunk_size, args.left_context):
            first = first if first is not None else time.perf_counter() - t0
            pieces.append(piece)
        wave = np.concatenate(pieces)
    else:  # one chunk when chunk_size covers every frame: the one-shot decode
        wave = model.chunked_decode(codes, args.chunk_size, args.left_context)
    seconds = time.perf_counter() - t0
    rate = SAMPLE_RATE
    write_wav(out, wave, rate)
    duration = len(wave) / rate
    first_note = f", first audio after {first * 1e3:.0f} ms" if args.stream else ""
    print(f"wrote {out}: {duration:.2f} s of audio at {rate} Hz from {frames} frames in {seconds:.2f} s "
          f"(real-time factor {seconds / duration:.3f}{first_note})")
    return 0


def cmd_speak(args) -> int:
    """Text to speech on our kernels: thinker, talker, code predictor and code2wav."""
    from pathlib import Path

    import numpy as np
    import soundfile as sf

    from .models.code2wav import SAMPLE_RATE
    from .formats.gguf_io import open_checkpoint
    from .models.speech import Speech, SpeechConfig, cache_length
    from .report.audio import write_wav
    from .workbench import prompt_ids, tokenizer_for

    out = Path(args.out)
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")
    ckpt = open_checkpoint(args.model)  # opened once: the speaker is checked before anything loads
    SpeechConfig.from_dict(ckpt.config, args.model).speaker_id(args.speaker)
    features = None
    if args.audio:  # a spoken question: its audios, then the text, in one user turn of the chat template
        from .models.audio_in import audio_prompt_ids

        if args.prompt_ids:
            raise ValueError("--audio builds its prompt with the chat template: give --prompt TEXT, not --prompt-ids")
        features = _audio(args)
        ids = audio_prompt_ids(args.model, [f.shape[1] for f in features], args.prompt)
    else:  # a spoken answer needs the assistant's turn: a text prompt always goes through the chat template
        ids = prompt_ids(args.model, prompt=args.prompt, ids=args.prompt_ids, chat=args.prompt is not None)
    speech = Speech(ckpt, max_len=cache_length(len(ids), args.max_new_tokens, args.max_frames), progress=not args.json)
    frames: list = []

    def counted(source):
        for frame in source:
            frames.append(frame)
            yield frame

    t0 = time.perf_counter()
    source = counted(speech.frames(ids, args.speaker, args.max_new_tokens, args.max_frames, greedy=args.greedy,
                                   seed=args.seed, features=features))
    first_audio = None
    if args.stream:  # pieces written as each chunk becomes decodable; renamed into place when complete
        from .atomic import atomic_path

        with atomic_path(out) as tmp, sf.SoundFile(tmp, "w", SAMPLE_RATE, 1, subtype="FLOAT", format="WAV") as f:
            for piece in speech.code2wav.stream(source, args.chunk_size, args.left_context):
                first_audio = first_audio if first_audio is not None else time.perf_counter() - t0
                f.write(piece.astype(np.float32))
                f.flush()
        samples = sf.info(out).frames
    else:
        codes = np.array(list(source)).reshape(-1, speech.code_predictor.groups)
        if not len(codes):
            raise ValueError("the talker ended before its first frame: no audio to write")
        wave = speech.vocode(codes, args.chunk_size, args.left_context)
        write_wav(out, wave, SAMPLE_RATE)
        samples = len(wave)
    seconds = time.perf_counter() - t0
    duration = samples / SAMPLE_RATE
    try:
        text = tokenizer_for(args.model).decode(speech.answer, skip_special_tokens=True)
    except ValueError:
        text = None
    if args.json:
        print(json.dumps({"prompt_ids": ids.tolist(), "text_ids": speech.answer, "text": text,
                          "codes": np.array(frames).tolist(), "wav": str(out), "audio_seconds": duration,
                          "seconds": seconds, "real_time_factor": seconds / duration if duration else None,
                          "first_audio_seconds": first_audio, "speaker": args.speaker,
                          "sampling": "greedy" if args.greedy else {"seed": args.seed}}))
    else:
        first_note = f", first audio after {first_audio * 1e3:.0f} ms" if first_audio is not None else ""
        print(text if text is not None else speech.answer)
        print(f"wrote {out}: {duration:.2f} s of speech ({len(frames)} frames) in {seconds:.2f} s "
              f"(real-time factor {seconds / duration:.3f}{first_note})")
    return 0


def cmd_compare(args) -> int:
    from .compare import Bounds
    from .workbench import compare_model

    inputs, component = _inputs(args)
    given = {k: v for k, v in (("mse", args.max_mse), ("cosine", args.min_cosine)) if v is not None}
    bounds = Bounds(**given) if given else None  # None: the reference dtype's default bounds
    comparison, index, timing = compare_model(args.model, inputs, args.out, reference=args.reference, dtype=args.dtype,
                                              bounds=bounds,
                                              component=component, root=args.references)
    print(comparison.summary())
    print(f"report: {index}  ({sum(timing.values()):.1f} s)")
    return 0 if comparison.passed else 1


def cmd_quant_report(args) -> int:
    from .report.quant_report import quant_report

    if args.speak:
        return _speech_quant_report(args)
    if args.codes is not None:  # the vocoder's report, judged by its waveform's bounds
        report = quant_report(args.model, args.gguf, codes=_codes(args.codes), out_dir=args.out,
                              progress=not args.no_progress)
        print(report.summary())
        print(f"report: {report.index}")
        return 0 if report.passed else 1
    text = None
    if args.text_file is not None:
        with open(args.text_file, encoding="utf-8") as f:
            text = f.read()
    elif args.prompt is not None:
        text = args.prompt
    if args.audio or args.image:  # the encoders and the thinker reading them
        if args.prompt_ids is not None or args.text_file is not None:
            raise ValueError("--audio and --image build their prompt with the chat template: give --prompt TEXT or "
                             "nothing")
        from .models.image_in import load_image_inputs

        images = load_image_inputs(args.model, args.image) if args.image else None
        report = quant_report(args.model, args.gguf, text=text, audio=_audio(args) if args.audio else None,
                              images=images, out_dir=args.out, progress=not args.no_progress)
    elif text is None and args.prompt_ids is None:
        raise ValueError("give one of --prompt, --prompt-ids, --text-file, --codes or --audio")
    else:
        report = quant_report(args.model, args.gguf, ids=args.prompt_ids, text=text, out_dir=args.out,
                              max_tokens=args.max_tokens, progress=not args.no_progress)
    print(report.summary())
    print(f"report: {report.index}")
    return 0


def _speech_quant_report(args) -> int:
    """quant-report --speak: the prompt spoken by the checkpoint and the GGUF, and by each part quantized alone."""
    from .report.quant_speech import speech_quant_report
    from .workbench import prompt_ids

    if args.prompt is None and args.prompt_ids is None:
        raise ValueError("--speak takes --prompt or --prompt-ids")
    # A text prompt is a user turn: speech needs the assistant's turn that the chat template opens.
    ids = prompt_ids(args.model, prompt=args.prompt, ids=args.prompt_ids, chat=args.prompt is not None)
    report = speech_quant_report(args.model, args.gguf, ids, args.out, speaker=args.speaker,
                                 max_new_tokens=args.max_new_tokens, max_frames=args.max_frames,
                                 progress=not args.no_progress)
    print(report.summary())
    print(f"report: {report.index}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return 0 if run_demo(args.work_dir, quick=args.quick)["passed"] else 1


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omni-lab", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("doctor", help="show the wgpu adapter, its features and limits; non-zero exit without one")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.add_argument("--quiet", action="store_true", help="print nothing; only the exit status tells")
    d.set_defaults(func=cmd_doctor)

    s = sub.add_parser("selfcheck", help="check every kernel entry point against its numpy reference (the op "
                                        "registry's quick cases); non-zero exit if one fails or is unchecked")
    s.add_argument("--json", action="store_true", help="print one JSON object: per entry point its NMSE, bound, ok "
                                                       "and the case that exercised it")
    s.set_defaults(func=cmd_selfcheck)

    t = sub.add_parser("tiny", help="write a tiny random checkpoint of a real architecture (Transformers' own save_pretrained)")
    t.add_argument("arch", choices=["qwen3", "omni"])
    t.add_argument("dir")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--preset", default="tiny", help="qwen3: tiny, tiny-gqa, qwen3-0.6b (Qwen3-0.6B's exact shapes); omni: tiny, tiny-dense, tiny-step2")
    t.set_defaults(func=cmd_tiny)

    def model_and_prompt(p, chat=False, codes=False):
        p.add_argument("--model", required=True, help="checkpoint directory (safetensors) or .gguf file")
        # not required: --audio alone is a prompt too (prompt_ids names what is missing otherwise)
        g = p.add_mutually_exclusive_group()
        g.add_argument("--prompt", help="text, tokenized with the model's tokenizer")
        g.add_argument("--prompt-ids", help="token ids, e.g. 1,2,3")
        p.add_argument("--audio", action="append", metavar="FILE",
                       help="an audio file (wav, flac, ogg; any rate, mixed to mono, resampled to 16 kHz); repeat "
                            "for several: audio parts of the chat prompt, before --prompt's text (extract and compare "
                            "span the audio encoder and the thinker; --component audio_encoder: the encoder alone)")
        p.add_argument("--image", action="append", metavar="FILE",
                       help="an image file (png, jpeg, webp, ...; converted to RGB, resized by the checkpoint's image "
                            "processor); repeat for several: image parts of the chat prompt, after the audios and "
                            "before --prompt's text (extract and compare span the vision encoder and the thinker; "
                            "--component vision: the encoder alone)")
        if codes:
            g.add_argument("--codes", help="CODES.npy: codec codes, int [16, frames] or [frames, 16] (code2wav)")
            p.add_argument("--component", help="the part of Qwen3-Omni to run: thinker (default for a prompt), "
                                               "code2wav (default with --codes), audio_encoder, vision, or talker / "
                                               "code_predictor (their prefills inside the prompt spoken greedily)")
            p.add_argument("--speaker", default="Ethan", help="talker, code_predictor: the voice (default Ethan)")
            p.add_argument("--max-new-tokens", type=positive, default=64,
                           help="talker, code_predictor: the thinker's answer, at most (64)")
            p.add_argument("--max-frames", type=positive, default=64,
                           help="talker, code_predictor: codec frames spoken, at most (64)")
        if chat:
            p.add_argument("--chat", action="store_true", help="apply the tokenizer's chat template")

    g = sub.add_parser("generate", help="generate text on our kernels")
    model_and_prompt(g, chat=True)
    g.add_argument("--max-new-tokens", type=positive, default=32)
    g.add_argument("--greedy", action="store_true", help="argmax decoding (default: sampling)")
    g.add_argument("--temperature", type=positive_float, default=0.7)
    g.add_argument("--top-k", type=positive, default=20, help="1 to 64 (candidates are chosen on the GPU)")
    g.add_argument("--top-p", type=probability, default=0.8)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--json", action="store_true", help="print one JSON object with tokens and text")
    g.add_argument("--q8-path", choices=["auto", "dot4", "f32"],
                   help="Q8_0 decode matvec: int8 dot4, f32, or auto: time both once on this adapter "
                        "(default: the adapter's tuning table, see doctor)")
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("extract", help="named activations from Transformers (hf) or our kernels (wgpu) to .npz")
    model_and_prompt(e, codes=True)
    e.add_argument("--backend", choices=["hf", "wgpu"], required=True)
    e.add_argument("--out", required=True, help="FILE.npz")
    e.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="Transformers' dtype (hf)")
    e.set_defaults(func=cmd_extract)

    c = sub.add_parser("compare", help="compare ours with Transformers layer by layer and write a report")
    model_and_prompt(c, codes=True)
    c.add_argument("--reference", help="a stored reference directory (default: capture one now)")
    c.add_argument("--references", help="where captured references are stored (default: reference_data/)")
    c.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    c.add_argument("--out", required=True, help="report directory")
    c.add_argument("--max-mse", type=float, help="MSE bound (default: by the reference's dtype: 1e-5 for float32; "
                                                 "bfloat16 is judged by NMSE < 1e-3 and cosine instead)")
    c.add_argument("--min-cosine", type=float, help="cosine bound (default 0.999)")
    c.set_defaults(func=cmd_compare)

    v = sub.add_parser("vocode", help="codec codes to a 24 kHz wav on our kernels (code2wav)")
    v.add_argument("--model", required=True, help="a Qwen3-Omni checkpoint directory (safetensors) or .gguf file")
    v.add_argument("--codes", required=True, help="CODES.npy: int [16, frames] or [frames, 16]")
    v.add_argument("--out", required=True, help="SPEECH.wav (written when complete)")
    v.add_argument("--chunk-size", type=positive, default=300, help="frames a chunk (Transformers' chunked_decode: 300)")
    v.add_argument("--left-context", type=non_negative, default=25, help="frames of context before a chunk (25)")
    v.add_argument("--stream", action="store_true", help="decode as frames arrive; report time to first audio")
    v.set_defaults(func=cmd_vocode)

    k = sub.add_parser("speak", help="text to speech on our kernels: the thinker answers, the talker and code "
                                      "predictor speak, code2wav writes the wav")
    k.add_argument("--model", required=True, help="a Qwen3-Omni checkpoint directory (safetensors) or .gguf file")
    kg = k.add_mutually_exclusive_group()
    kg.add_argument("--prompt", help="text, put into a user turn with the tokenizer's chat template")
    kg.add_argument("--prompt-ids", help="token ids of a whole chat prompt ending in the assistant's turn, e.g. 1,2,3")
    k.add_argument("--audio", action="append", metavar="FILE", help="a spoken question (wav, flac, ogg; any rate): "
                                                                     "answered in speech; repeat for several")
    k.add_argument("--out", required=True, help="SPEECH.wav (24 kHz float; written when complete)")
    k.add_argument("--speaker", default="Ethan", help="a speaker of the checkpoint's talker_config.speaker_id")
    k.add_argument("--greedy", action="store_true", help="argmax for talker and code predictor (default: sampling "
                                                          "with Transformers' generate defaults)")
    k.add_argument("--seed", type=int, default=0, help="seed of the talker's and code predictor's draws")
    k.add_argument("--max-new-tokens", type=positive, default=64, help="the thinker's answer, at most (64)")
    k.add_argument("--max-frames", type=positive, default=512, help="80 ms codec frames, at most (512)")
    k.add_argument("--stream", action="store_true", help="decode and write chunks as frames arrive; report the "
                                                          "time to first audio")
    k.add_argument("--chunk-size", type=positive, default=300, help="frames a code2wav chunk (Transformers: 300)")
    k.add_argument("--left-context", type=non_negative, default=25, help="frames of context before a chunk (25)")
    k.add_argument("--json", action="store_true", help="print one JSON object: text tokens, codes [frames, 16], wav")
    k.set_defaults(func=cmd_speak)

    from .formats import quantize

    quantize.add_parser(sub)

    q = sub.add_parser("quant-report", help="a Q8_0 GGUF against its BF16 checkpoint, both on our kernels: weight "
                                            "SQNR, activation drift, KL, perplexity, expert agreement; with --codes "
                                            "the vocoder's waveform (SNR, SI-SDR, log-mel distance)")
    q.add_argument("--model", required=True, help="the BF16 checkpoint directory the GGUF was made from")
    q.add_argument("--gguf", required=True, help="its Q8_0 .gguf file (omni-lab quantize)")
    qg = q.add_mutually_exclusive_group()
    qg.add_argument("--prompt", help="text, tokenized with the checkpoint's tokenizer")
    qg.add_argument("--prompt-ids", help="token ids, e.g. 1,2,3")
    qg.add_argument("--text-file", help="a UTF-8 text file (perplexity is measured over its tokens)")
    qg.add_argument("--codes", help="CODES.npy: codec codes, int [16, frames] or [frames, 16]: report on code2wav; "
                                    "exit status 1 when its waveform breaks the q8_0 bounds")
    q.add_argument("--audio", action="append", metavar="FILE", help="an audio file (with --prompt's text, or "
                                                                     "alone): the drift spans the audio encoder and "
                                                                     "the thinker; repeat for several")
    q.add_argument("--image", action="append", metavar="FILE", help="an image file (with --prompt's text, --audio, "
                                                                     "or alone): the drift spans the vision encoder, "
                                                                     "its DeepStack features and the thinker; repeat "
                                                                     "for several")
    q.add_argument("--max-tokens", type=positive, default=256, help="use at most this many tokens (default 256)")
    q.add_argument("--speak", action="store_true", help="the speech report: the prompt (a user turn) spoken by both, "
                                                        "codec-token agreement, waveform SNR / mel distance, and "
                                                        "each part quantized alone, ranked, with --keep advice")
    q.add_argument("--speaker", default="Ethan", help="with --speak: the talker's voice (default Ethan)")
    q.add_argument("--max-new-tokens", type=positive, default=64, help="with --speak: the thinker's answer, at most")
    q.add_argument("--max-frames", type=positive, default=64, help="with --speak: codec frames, at most (default 64)")
    q.add_argument("--out", required=True, help="report directory (report.json, PNGs, index.html)")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_quant_report)

    m = sub.add_parser("demo", help="the main job: check the adapter and kernels, then run the tiny models")
    m.add_argument("--work-dir", default="runs/demo", help="where the tiny models and reports go")
    m.add_argument("--quick", action="store_true", help="one tiny model, 4 generated tokens")
    m.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # After parsing, so that --help and usage errors answer without importing torch
    import warnings

    from .errors import OmniLabError, OmniLabWarning

    shown = warnings.showwarning

    def one_line(message, category, *rest, **kw):  # ours as the errors are: one line, no source line under it
        if issubclass(category, OmniLabWarning):
            print(f"omni-lab {args.command}: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *rest, **kw)

    warnings.showwarning = one_line
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"omni-lab {args.command}: interrupted", file=sys.stderr)
        return 130
    # Ours, and the ValueError / OSError that argument checks and the file system raise with the value or
    # file in their message (a missing file, a full disk): one line, no traceback
    except (OmniLabError, ValueError, OSError) as e:
        if args.debug:
            raise
        print(f"omni-lab {args.command}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # anything else is a bug of ours: say so, still in one line
        if args.debug:
            raise
        print(f"omni-lab {args.command}: internal error (a bug in omni_lab): {type(e).__name__}: {e}; "
              f"run `omni-lab --debug {args.command} ...` for the traceback", file=sys.stderr)
        return 3
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
