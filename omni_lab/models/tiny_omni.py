"""Tiny random Qwen3-Omni checkpoints with every part (thinker with audio and vision towers, talker, code
predictor, code2wav), written by Transformers itself, plus a tokenizer whose special tokens have the ids
the config names and whose chat template takes audio and images, and preprocessor_config.json: the feature
extractor the audio encoder's mel bins need and the image processor whose patches the vision encoder reads.

Facts that shape the config (transformers 5.23, see DESIGN.md): every special id of the top-level and
thinker configs must be a row of the thinker's embedding; `generate(return_audio=True)` suppresses the
top 1024 ids of the talker vocabulary except the codec EOS, so the talker vocabulary is 1024 + a small
codec range that holds the codec specials; the talker text config needs `shared_expert_intermediate_size`
and the talker config `spatial_merge_size`; the thinker config needs `vision_start_token_id`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .tiny import _write_atomically, train_tokenizer

# Tokens the Omni config names, appended after the trained vocabulary (so their ids are known only once
# the tokenizer is built). Role words are single tokens in Qwen's vocabulary, and `generate` finds turns
# by their ids, so they are added as (non-special) tokens too.
OMNI_SPECIAL_TOKENS = {
    "audio_start_token_id": "<|audio_start|>", "audio_end_token_id": "<|audio_end|>",
    "audio_token_id": "<|audio_pad|>", "image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>",
    "tts_pad_token_id": "<|tts_pad|>", "tts_bos_token_id": "<|tts_bos|>", "tts_eos_token_id": "<|tts_eos|>",
}
ROLE_TOKENS = {"system_token_id": "system", "user_token_id": "user", "assistant_token_id": "assistant"}

TRAINED_VOCAB = 384

# Thinker text shapes. "tiny" is all-MoE; "tiny-dense" has a dense layer (mlp_only_layers and
# decoder_sparse_step both exercised), another head layout and ragged widths.
OMNI_PRESETS = {
    "tiny": dict(vocab_size=416, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, moe_intermediate_size=32, num_experts=8,
                 num_experts_per_tok=2, mrope_section=[4, 2, 2]),
    "tiny-dense": dict(vocab_size=430, hidden_size=72, intermediate_size=100, num_hidden_layers=3,
                       num_attention_heads=6, num_key_value_heads=2, head_dim=24, moe_intermediate_size=40,
                       num_experts=8, num_experts_per_tok=3, mrope_section=[4, 4, 4], mlp_only_layers=[1],
                       decoder_sparse_step=1),
    "tiny-step2": dict(vocab_size=416, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, moe_intermediate_size=32,
                       num_experts=8, num_experts_per_tok=3, mrope_section=[4, 2, 2], decoder_sparse_step=2),
}

# The vocoder of each preset: every stage of the released one (sliding-window transformer, ConvNeXt upsampling,
# SnakeBeta decoder blocks) at small sizes. The window is shorter than a test's frame count, so the sliding mask
# matters; "tiny-dense" has GQA, ragged strides and four decoder blocks like the released model.
CODE2WAV_PRESETS = {
    "tiny": dict(hidden_size=32, num_attention_heads=2, num_key_value_heads=2, intermediate_size=48,
                 num_hidden_layers=2, sliding_window=4, upsampling_ratios=[2, 2], upsample_rates=[3, 2],
                 decoder_dim=32),
    "tiny-dense": dict(hidden_size=24, num_attention_heads=3, num_key_value_heads=1, intermediate_size=40,
                       num_hidden_layers=3, sliding_window=3, upsampling_ratios=[3, 2], upsample_rates=[2, 3, 2, 2],
                       decoder_dim=48),
}
CODE2WAV_PRESETS["tiny-step2"] = CODE2WAV_PRESETS["tiny"]

# The talker and code predictor of each preset. "tiny-dense" gives both other widths, head layouts, more
# layers and experts, so that the speech path runs at a second shape.
TALKER_PRESETS = {
    "tiny": (dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                  head_dim=16, moe_intermediate_size=16, shared_expert_intermediate_size=24, num_experts=4,
                  num_experts_per_tok=2, mrope_section=[4, 2, 2]),
             dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                  head_dim=16)),
    "tiny-dense": (dict(hidden_size=48, intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=12, moe_intermediate_size=20, shared_expert_intermediate_size=28,
                        num_experts=6, num_experts_per_tok=3, mrope_section=[2, 2, 2]),
                   dict(hidden_size=48, intermediate_size=56, num_hidden_layers=2, num_attention_heads=3,
                        num_key_value_heads=1, head_dim=16)),
}
TALKER_PRESETS["tiny-step2"] = TALKER_PRESETS["tiny"]

# Parameters of the vocoder that Transformers initialises so that a tiny random model hides them: LayerScale at
# layer_scale_initial_scale (0.01), ConvNeXt gamma at 1e-6, SnakeBeta's log-alpha and log-beta at 0 (alpha = beta
# = 1 in every channel), biases at 0, norm weights at 1. A kernel that dropped or misread any of them would give
# the same waveform. family -> (parameter-name suffixes under `code2wav.`, Transformers' init value, draw).
# The draws keep each module's scale near its trained role (gains near 1, log-parameters near 0) but spread
# per channel, so that every family moves the waveform (tests/test_code2wav_hf.py checks it).
CODE2WAV_DRAWS = {
    "layer_scale": ((".self_attn_layer_scale.scale", ".mlp_layer_scale.scale"), 0.01, ("uniform", 0.5, 1.5)),
    "convnext_gamma": ((".gamma",), 1e-6, ("uniform", 0.5, 1.5)),
    "snake_alpha": ((".alpha",), 0.0, ("normal", 0.0, 0.5)),
    "snake_beta": ((".beta",), 0.0, ("normal", 0.0, 0.5)),
    "conv_bias": ((".conv.bias",), 0.0, ("normal", 0.0, 0.1)),
    "linear_bias": ((".pwconv1.bias", ".pwconv2.bias"), 0.0, ("normal", 0.0, 0.1)),
    "norm_weight": (("norm.weight",), 1.0, ("normal", 1.0, 0.1)),
    "norm_bias": (("norm.bias",), 0.0, ("normal", 0.0, 0.1)),
}

# The audio encoder of each preset: the released layout (three stride-2 convs, windowed layers, two
# projections) at small sizes. n_window is the released 50 (Transformers' frame count assumes it); the
# attention windows are 2 s ("tiny") and 4 s ("tiny-dense") instead of 8 s, so a few seconds of audio already
# cut several windows with a ragged last one.
AUDIO_PRESETS = {
    "tiny": dict(num_mel_bins=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32, d_model=16,
                 downsample_hidden_size=8, n_window=50, n_window_infer=200, max_source_positions=64),
    "tiny-dense": dict(num_mel_bins=40, encoder_layers=2, encoder_attention_heads=3, encoder_ffn_dim=40, d_model=24,
                       downsample_hidden_size=6, n_window=50, n_window_infer=400, max_source_positions=64),
}
AUDIO_PRESETS["tiny-step2"] = AUDIO_PRESETS["tiny"]

# Audio-tower parameters Transformers initialises to an identity or zero (LayerNorm weights 1 and biases 0,
# linear and conv biases 0), drawn so that each one moves the encoder's output: suffix -> (mean, std).
AUDIO_DRAWS = {"_layer_norm.weight": (1.0, 0.2), "ln_post.weight": (1.0, 0.2), "_layer_norm.bias": (0.0, 0.2),
               "ln_post.bias": (0.0, 0.2), ".bias": (0.0, 0.1)}

# The vision encoder of each preset: the released layout (patch embedding, learned position grid, 2-D rotary
# blocks, 2x2 merger, DeepStack mergers) at small sizes. Every thinker layer that can take a DeepStack feature
# gets one (HF adds feature i after thinker layer i), so each injection matters; "tiny-dense" has another head
# width (head_dim 12: three rotary frequencies per axis), a non-power-of-two position grid (7x7), exact GELU and
# DeepStack indexes out of order (the features go to the thinker in block order, each through the merger
# its index names).
VISION_PRESETS = {
    "tiny": dict(depth=3, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=4, spatial_merge_size=2,
                 temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0, 1],
                 hidden_act="gelu_pytorch_tanh"),
    "tiny-dense": dict(depth=3, hidden_size=24, intermediate_size=40, num_heads=2, patch_size=4, spatial_merge_size=2,
                       temporal_patch_size=2, num_position_embeddings=49, deepstack_visual_indexes=[2, 0, 1],
                       hidden_act="gelu"),
}
VISION_PRESETS["tiny-step2"] = VISION_PRESETS["tiny"]

# The image processor's pixel budget for the tiny models (Qwen2VLImageProcessor's min_pixels and max_pixels,
# saved as size.shortest_edge / longest_edge): at patch 4 an image is resized to between 16 and 144 patches
# (4 to 36 thinker tokens), so that a photograph stays quick on a software GPU.
TINY_MIN_PIXELS, TINY_MAX_PIXELS = 16 * 16, 48 * 48

# Vision parameters Transformers initialises to an identity or zero (LayerNorm weights 1 and biases 0, linear
# and patch-embedding biases 0), drawn so that each one moves the encoder's output: suffix -> (mean, std).
VISION_DRAWS = {"norm1.weight": (1.0, 0.2), "norm2.weight": (1.0, 0.2), "ln_q.weight": (1.0, 0.2),
                "norm1.bias": (0.0, 0.2), "norm2.bias": (0.0, 0.2), "ln_q.bias": (0.0, 0.2), ".bias": (0.0, 0.1)}

# The chat template with audio and image parts (`{"type": "audio"}` -> one placeholder between the audio marks,
# `{"type": "image"}` one between the vision marks, which the prompt builder widens to the encoder's frame or
# merged-token count, as Qwen3OmniMoeProcessor does).
OMNI_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<|audio_start|><|audio_pad|><|audio_end|>"
    "{% elif part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

WAVE_RMS = 0.15   # the tiny vocoder's output level (full scale is 1)
PROBE_FRAMES = 16

# Codec groups per frame, as released: the talker predicts the first, the code predictor the rest, and
# code2wav reads one code of each (its num_quantizers must equal the talker's num_code_groups).
NUM_CODE_GROUPS = 16

# The talker's routers (Transformers leaves them at zero): router logits of std about 2 on unit inputs.
TALKER_ROUTER_STD = 0.4
TALKER_BIAS_STD, TALKER_NORM_STD = 0.1, 0.1

# Codec ids of the talker: all below talker vocab - 1024, the range generate() lets it emit.
CODEC = dict(codec_pad_id=40, codec_bos_id=41, codec_eos_token_id=42, codec_nothink_id=43, codec_think_bos_id=44,
             codec_think_eos_id=45)
SPEAKER_ID = {"ethan": 46, "chelsie": 47}
CODEC_RANGE = 48


def omni_tokenizer():
    """The tiny BPE tokenizer with the Omni special tokens appended; returns (tokenizer, name -> id)."""
    from tokenizers import AddedToken

    tok = train_tokenizer(TRAINED_VOCAB)
    tok.add_special_tokens({"additional_special_tokens": list(OMNI_SPECIAL_TOKENS.values())})
    tok.add_tokens([AddedToken(w, normalized=False, special=False) for w in ROLE_TOKENS.values()])
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in {**OMNI_SPECIAL_TOKENS, **ROLE_TOKENS}.items()}
    ids["im_start_token_id"] = tok.convert_tokens_to_ids("<|im_start|>")
    ids["im_end_token_id"] = tok.convert_tokens_to_ids("<|im_end|>")
    ids["pad_token_id"] = tok.convert_tokens_to_ids("<|endoftext|>")
    tok.chat_template = OMNI_CHAT_TEMPLATE
    return tok, ids


def omni_config(preset: str, ids: dict, initializer_range: float = 0.1):
    from transformers import Qwen3OmniMoeConfig

    if preset not in OMNI_PRESETS:
        raise ValueError(f"unknown preset '{preset}'; choose one of {', '.join(OMNI_PRESETS)}")
    shape = dict(OMNI_PRESETS[preset])
    section = shape.pop("mrope_section")
    if max(ids.values()) >= shape["vocab_size"]:
        raise ValueError(f"preset {preset}: vocab_size {shape['vocab_size']} is too small for token id {max(ids.values())}")
    d = shape["hidden_size"]
    rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": section, "interleaved": True}
    text = dict(shape, rms_norm_eps=1e-6, hidden_act="silu", norm_topk_prob=True, rope_parameters=rope,
                max_position_embeddings=4096, initializer_range=initializer_range, tie_word_embeddings=False,
                pad_token_id=ids["pad_token_id"], eos_token_id=ids["im_end_token_id"])
    audio = dict(AUDIO_PRESETS[preset], output_dim=d, initializer_range=initializer_range)
    vision = dict(VISION_PRESETS[preset], out_hidden_size=d, initializer_range=initializer_range)
    thinker = dict(text_config=text, audio_config=audio, vision_config=vision, initializer_range=initializer_range,
                   **{k: ids[k] for k in ("audio_start_token_id", "audio_token_id", "image_token_id", "video_token_id",
                                          "vision_start_token_id", "user_token_id")},
                   audio_end_token_id=ids["audio_end_token_id"], vision_end_token_id=ids["vision_end_token_id"])
    talker_shape, predictor_shape = (dict(x) for x in TALKER_PRESETS[preset])
    talker_section = talker_shape.pop("mrope_section")
    talker_text = dict(talker_shape, vocab_size=1024 + CODEC_RANGE,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": talker_section,
                                        "interleaved": True},
                       rms_norm_eps=1e-6, initializer_range=initializer_range)
    predictor = dict(predictor_shape, vocab_size=CODEC_RANGE, num_code_groups=NUM_CODE_GROUPS, rms_norm_eps=1e-6,
                     initializer_range=initializer_range)
    talker = dict(text_config=talker_text, code_predictor_config=predictor, num_code_groups=NUM_CODE_GROUPS,
                  thinker_hidden_size=d,
                  accept_hidden_layer=1, spatial_merge_size=2, speaker_id=dict(SPEAKER_ID),
                  initializer_range=initializer_range, **CODEC,
                  **{k: ids[k] for k in ("audio_token_id", "image_token_id", "video_token_id", "vision_start_token_id",
                                         "audio_start_token_id")})
    code2wav = dict(CODE2WAV_PRESETS[preset], codebook_size=CODEC_RANGE, num_quantizers=NUM_CODE_GROUPS,
                    max_position_embeddings=1024, initializer_range=initializer_range)
    return Qwen3OmniMoeConfig(
        thinker_config=thinker, talker_config=talker, code2wav_config=code2wav, enable_audio_output=True,
        **{k: ids[k] for k in ("im_start_token_id", "im_end_token_id", "tts_pad_token_id", "tts_bos_token_id",
                               "tts_eos_token_id", "system_token_id", "user_token_id", "assistant_token_id")})


def code2wav_family(name: str) -> str | None:
    """The CODE2WAV_DRAWS family of a parameter name under `code2wav.` (None: left as Transformers drew it)."""
    for family, (suffixes, _, _) in CODE2WAV_DRAWS.items():
        if name.endswith(suffixes):
            return family
    return None


def draw_code2wav(code2wav, seed: int) -> None:
    """Redraw the CODE2WAV_DRAWS parameters of a Qwen3OmniMoeCode2Wav in place, from a generator of their own
    (seeded from `seed`, so the thinker's and talker's draws are untouched by it)."""
    import torch

    # A stream apart from the global seed and from the talker experts' torch.Generator(seed).
    stream = int.from_bytes(hashlib.sha256(f"code2wav:{seed}".encode()).digest()[:8], "little")
    generator = torch.Generator().manual_seed(stream)
    with torch.no_grad():
        for name, param in code2wav.named_parameters():  # registration order: the same on every build
            family = code2wav_family(name)
            if family is None:
                continue
            how, a, b = CODE2WAV_DRAWS[family][2]
            if how == "uniform":
                value = a + (b - a) * torch.rand(param.shape, generator=generator)
            else:
                value = a + b * torch.randn(param.shape, generator=generator)
            param.copy_(value)
        # With these draws the waveform runs far past the clamp at +-1 (a quarter of "tiny"'s samples clipped),
        # where an error no longer shows. Scale the last conv (output = w * x + b, so both) so that a decode of
        # random codes has WAVE_RMS, a normal speech level, and the clamp rarely acts.
        cfg = code2wav.config
        probe = torch.randint(0, cfg.codebook_size, (1, cfg.num_quantizers, PROBE_FRAMES), generator=generator)
        pre_clamp = {}
        handle = code2wav.decoder[-1].register_forward_hook(lambda module, args, out: pre_clamp.setdefault("wav", out))
        try:
            code2wav(probe)
        finally:
            handle.remove()
        gain = WAVE_RMS / float(pre_clamp["wav"].pow(2).mean().sqrt())
        last = code2wav.decoder[-1].conv
        last.weight.mul_(gain)
        last.bias.mul_(gain)


def draw_audio_tower(tower, seed: int) -> None:
    """Redraw the AUDIO_DRAWS parameters of a Qwen3OmniMoeAudioEncoder in place, from a generator of their own."""
    import torch

    stream = int.from_bytes(hashlib.sha256(f"audio:{seed}".encode()).digest()[:8], "little")
    generator = torch.Generator().manual_seed(stream)
    with torch.no_grad():
        for name, param in tower.named_parameters():
            suffix = next((k for k in AUDIO_DRAWS if name.endswith(k)), None)
            if suffix is not None:
                mean, std = AUDIO_DRAWS[suffix]
                param.copy_(mean + std * torch.randn(param.shape, generator=generator))


def draw_vision(visual, seed: int) -> None:
    """Redraw the VISION_DRAWS parameters of a Qwen3OmniMoeVisionEncoder in place, from a generator of their own."""
    import torch

    stream = int.from_bytes(hashlib.sha256(f"vision:{seed}".encode()).digest()[:8], "little")
    generator = torch.Generator().manual_seed(stream)
    with torch.no_grad():
        for name, param in visual.named_parameters():
            suffix = next((k for k in VISION_DRAWS if name.endswith(k)), None)
            if suffix is not None:
                mean, std = VISION_DRAWS[suffix]
                param.copy_(mean + std * torch.randn(param.shape, generator=generator))


def image_processor(preset: str):
    """The checkpoint's image processor: Qwen2-VL's (as released), its patch, merge and temporal sizes the
    vision config's, with the tiny pixel budget."""
    # The Pillow backend by name: Qwen2VLImageProcessor wants torchvision and falls back to it with a warning.
    # Both save image_processor_type "Qwen2VLImageProcessor", so AutoImageProcessor picks whichever is installed.
    from transformers import Qwen2VLImageProcessorPil

    v = VISION_PRESETS[preset]
    return Qwen2VLImageProcessorPil(patch_size=v["patch_size"], merge_size=v["spatial_merge_size"],
                                    temporal_patch_size=v["temporal_patch_size"], min_pixels=TINY_MIN_PIXELS,
                                    max_pixels=TINY_MAX_PIXELS)


def write_preprocessor_config(out_dir: Path, preset: str) -> None:
    """preprocessor_config.json with the feature extractor's fields and the image processor's, one file as
    the released checkpoint has it: AutoFeatureExtractor reads its feature_extractor_type, AutoImageProcessor
    its image_processor_type."""
    import json

    feature_extractor(preset).save_pretrained(out_dir)
    path = out_dir / "preprocessor_config.json"
    merged = json.loads(path.read_text())
    merged.update(json.loads(image_processor(preset).to_json_string()))
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


def feature_extractor(preset: str):
    """The checkpoint's feature extractor: Whisper's log-mel at 16 kHz with the preset's mel bins."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=AUDIO_PRESETS[preset]["num_mel_bins"], sampling_rate=16000)


def build_tiny_omni(out_dir: str | Path, seed: int = 0, preset: str = "tiny") -> Path:
    """Write a random Qwen3OmniMoeForConditionalGeneration checkpoint (BF16 safetensors, every part) and
    its tokenizer to `out_dir`. The initialisation is wider than the default 0.02 so that routers pick
    their experts by clear margins and greedy decoding is rarely a near tie; the vocoder's gains, SnakeBeta
    parameters, biases and norms are drawn too (draw_code2wav), so that each of them moves the waveform, and
    so are the audio tower's and the vision encoder's norms and biases (draw_audio_tower, draw_vision)."""
    import torch
    from transformers import Qwen3OmniMoeForConditionalGeneration

    tokenizer, ids = omni_tokenizer()
    config = omni_config(preset, ids)

    def write(tmp: Path) -> None:
        torch.manual_seed(seed)
        model = Qwen3OmniMoeForConditionalGeneration(config)
        # Transformers 5.23's _init_weights skips the talker's fused expert weights, which stay as
        # uninitialised memory: different on every build and at times NaN. Draw them like the other linears.
        # It zeroes the talker's routers, so every expert ties (0.25 each of 4): draw them wide enough that
        # each token picks its experts by clear margins, as the thinker's do.
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.startswith("talker.") and ".mlp.experts." in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * config.talker_config.initializer_range)
                elif name.startswith("talker.") and name.endswith(".mlp.gate.weight"):
                    param.copy_(torch.randn(param.shape, generator=generator) * TALKER_ROUTER_STD)
                # The talker's projection biases start at zero and its norms at one: drawn, so that a kernel
                # that dropped one would change the speech.
                elif name.startswith("talker.") and name.endswith((".linear_fc1.bias", ".linear_fc2.bias")):
                    param.copy_(torch.randn(param.shape, generator=generator) * TALKER_BIAS_STD)
                elif name.startswith("talker.") and name.endswith("norm.weight"):
                    param.copy_(1.0 + torch.randn(param.shape, generator=generator) * TALKER_NORM_STD)
        draw_code2wav(model.code2wav, seed)
        draw_audio_tower(model.thinker.model.audio_tower, seed)
        draw_vision(model.thinker.model.visual, seed)
        model = model.to(torch.bfloat16)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_preprocessor_config(tmp, preset)

    return _write_atomically(Path(out_dir), write)
