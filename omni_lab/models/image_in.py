"""Image prompts to the Qwen3-Omni thinker: image files -> RGB (Pillow) -> the checkpoint's own image processor
(through Transformers: resize to the pixel budget, normalisation, patching) -> the vision encoder -> the
thinker, whose image placeholders take the merged features and whose first layers take the DeepStack
features at the image positions; audio may share the prompt.

- Files are opened with Pillow and converted to RGB (palette, CMYK, greyscale, alpha); an empty file, one
  Pillow cannot read, or one the processor refuses (smaller than a patch pair, an aspect ratio past 200) is
  refused with one error naming the file. An image past the pixel budget is the processor's to shrink.
- The prompt: the chat template with the audios, the images, then the text; each image's placeholder widened
  to t * h * w / merge^2 tokens (the processor's replace_image_token).
- Positions: transformers' own get_rope_index (a method of its model class; it reads only token ids and the
  config, so it is called here on the host with the thinker config, no model): the images' tokens get
  (time, row, column) positions, text after them continues from the largest plus one; decode steps add
  that shift (HF's rope_deltas) to their cache position.
- The merge (get_placeholder_mask, masked_scatter): the token embeddings with the placeholders' rows zero
  plus the encoders' rows gathered to their placeholders (zeros elsewhere): gathers and adds in one GPU
  step, exact.
- DeepStack (the text model's _deepstack_process): feature i, the i-th DeepStack merger output in block
  order, is added at the image positions to the residual stream after thinker layer i, for i below both the
  feature count and the layer count, before the next layer's norm: a layer hook (models/layers.py) that
  gathers the feature rows to the image positions and adds them into a buffer of its own, so that
  `...layers.{i}` stays the layer's output, as HF's hooks see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..errors import InputError
from ..gpu import Tensor, runtime
from ..ops import elementwise, embedding
from . import audio_encoder as enc
from . import vision_encoder as ve
from .audio_encoder import AudioEncoder, AudioEncoderConfig
from .audio_in import INPUTS_EMBEDS, chat_prompt_ids
from .component import ModelInputError
from .config import DecoderConfig, Fields, sub_dict
from .layers import LayerHook
from .thinker import LIVE, Qwen3OmniThinkerText
from .vision_encoder import VisionEncoder, VisionEncoderConfig


class ImageFileError(InputError):
    """An image file we cannot take; the message names the file."""


def read_image(path: str | Path):
    """The file as an RGB PIL image (fully decoded, so a truncated file fails here, not later)."""
    import io
    import struct
    import zlib

    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: no such image file")
    if path.stat().st_size == 0:
        raise ImageFileError(f"{path}: the file is empty")
    try:
        # From memory, not the file: a corrupt chunk length makes Pillow's PNG reader ask for up to 4 GiB at
        # once, which a file object allocates up front and a BytesIO caps at what is there.
        with Image.open(io.BytesIO(path.read_bytes())) as im:
            im.load()
            if im.mode == "P" and "transparency" in im.info:  # Pillow maps a palette's transparency via RGBA
                im = im.convert("RGBA")
            return im.convert("RGB")
    # Pillow's decoders report a corrupt file as any of these (PNG chunks: SyntaxError; zlib streams:
    # zlib.error; short reads: EOFError, struct.error); a decompression bomb as DecompressionBombError.
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
            Image.DecompressionBombError) as e:
        why = "no image format recognised" if isinstance(e, UnidentifiedImageError) else f"{type(e).__name__}: {e}"
        raise ImageFileError(f"{path}: not an image Pillow can read (png, jpeg, webp, ...): {why}") from None


def image_processor(model_dir: str | Path):
    from transformers import AutoImageProcessor

    model_dir = Path(model_dir)
    if not (model_dir / "preprocessor_config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no preprocessor_config.json (the image processor images need)")
    return AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)


def load_image_inputs(model_dir: str | Path, files, max_patches: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pixel_values [N, K] float32, image_grid_thw [images, 3] int64) of the files, from the checkpoint's
    image processor. Each image is processed alone (the processor treats the images of a batch
    independently), so that a refusal names its file."""
    proc = image_processor(model_dir)
    pvs, grids = [], []
    for f in files:
        im = read_image(f)
        try:
            out = proc(images=[im], return_tensors="np")
        except ValueError as e:  # smart_resize: too small for one merged patch, or an extreme aspect ratio
            raise ImageFileError(f"{f}: the image processor refuses this {im.width}x{im.height} image: {e}") from None
        pvs.append(np.asarray(out["pixel_values"], np.float32))
        grids.append(np.asarray(out["image_grid_thw"], np.int64))
    pv, grid = np.concatenate(pvs), np.concatenate(grids)
    if max_patches is not None and pv.shape[0] > max_patches:
        raise ImageFileError(f"{', '.join(map(str, files))}: {pv.shape[0]} patches exceed the {max_patches} this model "
                             "takes (raise max_len)")
    return pv, grid


def media_prompt_ids(model_dir: str | Path, text: str | None, audio_frames=(), image_grid_thw=None) -> np.ndarray:
    """The chat prompt of one user turn: the audios (mel frame counts), the images (their grids), the text."""
    merge = image_processor(model_dir).merge_size if image_grid_thw is not None else 1
    images = [] if image_grid_thw is None else [("image", int(np.prod(g)) // merge ** 2)
                                                for g in np.atleast_2d(image_grid_thw)]
    return chat_prompt_ids(model_dir, [("audio", enc.output_length(n)) for n in audio_frames] + images, text)


def rope_index(config: dict, ids: np.ndarray, image_grid_thw, audio_lengths=None) -> tuple[np.ndarray, int]:
    """([3, T] int32 MRoPE positions of the prompt, the shift of the text after it) from transformers'
    get_rope_index, called on the host with the thinker config's token ids (it reads nothing else)."""
    import torch
    from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as hf

    th = config["thinker_config"]
    cls = hf.Qwen3OmniMoePreTrainedModelForConditionalGeneration
    fields = SimpleNamespace(**{k: th.get(k) for k in ("image_token_id", "video_token_id", "audio_token_id",
                                                       "vision_start_token_id", "audio_start_token_id")},
                             position_id_per_seconds=th.get("position_id_per_seconds", 25),
                             audio_config=SimpleNamespace(n_window=th.get("audio_config", {}).get("n_window", 50)))
    host = SimpleNamespace(config=fields, spatial_merge_size=th["vision_config"]["spatial_merge_size"])
    host.get_llm_pos_ids_for_vision = cls.get_llm_pos_ids_for_vision.__get__(host)
    ids_t = torch.as_tensor(np.asarray(ids, np.int64))[None]
    lengths = None if audio_lengths is None else torch.as_tensor(np.asarray(audio_lengths, np.int64))
    grid = None if image_grid_thw is None else torch.as_tensor(np.atleast_2d(np.asarray(image_grid_thw, np.int64)))
    pos, delta = cls.get_rope_index(host, ids_t, grid, None, torch.ones_like(ids_t), False, lengths)
    return pos[:, 0].numpy().astype(np.int32), int(delta.reshape(-1)[0])  # [3, 1, T] -> [3, T]


@dataclass(frozen=True)
class MediaThinkerConfig:
    vision: VisionEncoderConfig
    audio: AudioEncoderConfig
    thinker: DecoderConfig
    image_token_id: int
    audio_token_id: int
    config: dict  # the whole config.json: get_rope_index reads its token ids


class DeepStack(LayerHook):
    """h + feature rows gathered to the image positions (rows[t] = -1 elsewhere: a zero row), into `out`. Acts
    only on the prompt it was built for (t tokens): decode steps are text. The hooks of one prompt share
    `placed` and `out`: the next layer has read a hook's output before the next hook writes."""

    def __init__(self, rows: Tensor, feature: Tensor, t: int, placed: Tensor, out: Tensor):
        self.rows, self.feature, self.t, self.placed, self.out = rows, feature, t, placed, out

    def __call__(self, h: Tensor, ctx) -> Tensor:
        if ctx.t != self.t:
            return h
        placed = embedding.embedding(self.rows, self.feature, out=self.placed)
        return elementwise.add(h, placed, out=self.out)


class ThinkerWithMedia:
    """The vision encoder, the audio encoder and the thinker of one checkpoint: prompts whose image
    placeholders (`image_token_id`, one per merged patch, images in order) take the vision encoder's output,
    with DeepStack, and whose audio placeholders the audio encoder's. The thinker component of the registry
    for inputs (input_ids, pixel_values, image_grid_thw) and, with audio, (input_ids, input_features,
    pixel_values, image_grid_thw): ThinkerWithImages and ThinkerWithAudioImages take those argument orders.
    `max_len` bounds the prompt, the patches and the audio frames."""

    def __init__(self, cfg: MediaThinkerConfig, ckpt, max_len: int = 2048, progress: bool = False,
                 thinker: Qwen3OmniThinkerText | None = None, audio: bool = True):
        self.cfg = cfg
        self.vision = VisionEncoder(cfg.vision, ckpt, max_len, progress)
        self.audio = AudioEncoder(cfg.audio, ckpt, max_len, progress) if audio else None
        self.thinker = thinker or Qwen3OmniThinkerText(cfg.thinker, ckpt, max_len, progress)
        self._bufs: dict[tuple, tuple[Tensor, ...]] = {}

    @classmethod
    def config_from(cls, d: dict, source: str = "config.json") -> MediaThinkerConfig:
        f = Fields(sub_dict(d, "thinker_config", source), source, "thinker_config.")
        return MediaThinkerConfig(VisionEncoder.config_from(d, source), AudioEncoder.config_from(d, source),
                                  Qwen3OmniThinkerText.config_from(d, source), f.int("image_token_id", lo=0),
                                  f.int("audio_token_id", lo=0), d)

    @classmethod
    def load(cls, path, max_len: int = 2048, progress: bool = False) -> "ThinkerWithMedia":
        from .registry import open_checkpoint

        ckpt = open_checkpoint(path)
        return cls(cls.config_from(ckpt.config, str(path)), ckpt, max_len, progress)

    # -- shapes --------------------------------------------------------------------------------
    @staticmethod
    def media_specs(cfg: MediaThinkerConfig, ids, features, pixel_values, image_grid_thw) -> list:
        """Audio encoder, vision encoder, then the thinker's with its merged input in place of embed_tokens."""
        out = []
        if features is not None:
            lengths = [np.shape(a)[1] for a in enc.as_features(cfg.audio, features)]
            out += AudioEncoder.activation_specs(cfg.audio, lengths)
        out += VisionEncoder.input_specs(cfg.vision, pixel_values, image_grid_thw)
        thinker = Qwen3OmniThinkerText.activation_specs(cfg.thinker, len(ids))
        first = thinker[0]
        return out + [type(first)(INPUTS_EMBEDS, first.shape, first.layout, first.kind)] + thinker[1:]

    @staticmethod
    def media_length(cfg: MediaThinkerConfig, ids, features, pixel_values, image_grid_thw) -> int:
        n = [len(ids), VisionEncoder.input_length(cfg.vision, pixel_values, image_grid_thw)]
        if features is not None:
            n.append(AudioEncoder.input_length(cfg.audio, features))
        return max(n)

    # -- running -------------------------------------------------------------------------------
    def _buffers(self, t: int, d: int) -> tuple[Tensor, ...]:
        """(text ids, audio row per token, image row per token, three gathers, merged embeddings, DeepStack's
        gather and stream)."""
        if t not in self._bufs:
            rt = runtime()
            self._bufs[t] = (*(rt.empty((t,), "i32", label=f"image_in.{n}") for n in ("text_ids", "audio_rows", "image_rows")),
                             *(rt.empty((t, d), label=f"image_in.{n}") for n in ("text", "audio", "image", "inputs_embeds",
                                                                                  "deepstack_placed", "deepstack_stream")))
        return self._bufs[t]

    @staticmethod
    def _rows(ids: np.ndarray, at: np.ndarray) -> np.ndarray:
        rows = np.full(len(ids), -1, np.int32)
        rows[at] = np.arange(len(at), dtype=np.int32)  # encoder row of each placeholder, in order
        return rows

    def embeds(self, ids, features, pixel_values, image_grid_thw, taps=()):
        """(the thinker's input embeddings [T, D] on the GPU, the DeepStack hooks, the MRoPE positions and
        shift, the tapped encoder activations)."""
        cfg, rt = self.cfg, runtime()
        ids = self.thinker.check_ids(ids)
        lay_v, pv = self.vision.prepare(pixel_values, image_grid_thw)
        image_at = np.flatnonzero(ids == cfg.image_token_id)
        tokens = ve.merged_tokens(cfg.vision, lay_v.grid)
        if len(image_at) != sum(tokens):
            raise ModelInputError(f"the prompt has {len(image_at)} image placeholders (id {cfg.image_token_id}) but the "
                                  f"images give {sum(tokens)} merged patches ({tokens})")
        audio_at = np.flatnonzero(ids == cfg.audio_token_id)
        lay_a = feats = None
        if features is not None:
            if self.audio is None:
                raise ModelInputError("this model was loaded without its audio encoder")
            lay_a, feats = self.audio.prepare(features)
            if len(audio_at) != lay_a.t:
                raise ModelInputError(f"the prompt has {len(audio_at)} audio placeholders (id {cfg.audio_token_id}) but "
                                      f"the audios give {lay_a.t} encoder frames ({lay_a.per_audio})")
        elif len(audio_at):
            raise ModelInputError(f"the prompt has {len(audio_at)} audio placeholders but no audio features")
        t, d = len(ids), self.thinker.cfg.hidden_size
        text_ids, audio_rows, image_rows, text_rows, audio_placed, image_placed, out, deep_placed, deep_out = \
            self._buffers(t, d)
        text = ids.copy()
        text[image_at] = -1  # the placeholders' rows gather nothing: zeros
        text[audio_at] = -1
        rt.write(text_ids, text)
        rt.write(image_rows, self._rows(ids, image_at))
        rt.write(audio_rows, self._rows(ids, audio_at))
        v_specs = {a.name: a for a in self.vision.activations(lay_v.n)}
        a_specs = {a.name: a for a in self.audio.activations(list(lay_a.lengths))} if lay_a else {}
        tap_v = {n: self.vision.tap_buffers(v_specs[n]) for n in taps if n in v_specs and n != ve.OUTPUT}
        tap_a = {n: self.audio.tap_buffers(a_specs[n]) for n in taps if n in a_specs and n != enc.OUTPUT}
        with rt.step() as step:
            image, deep = self.vision.encode(lay_v, pv, tap_v)
            emb = embedding.embedding(text_ids, self.thinker.embed_tokens, out=text_rows)
            placed = embedding.embedding(image_rows, image, out=image_placed)
            elementwise.add(emb, placed, out=out)
            reads = {**self.vision.read_taps(step, tap_v)}
            if ve.OUTPUT in taps:
                reads[ve.OUTPUT] = step.read(image)
            if lay_a is not None:
                audio = self.audio.encode(lay_a, feats, tap_a)
                placed = embedding.embedding(audio_rows, audio, out=audio_placed)
                elementwise.add(out, placed, out=out)
                reads.update(self.audio.read_taps(step, tap_a))
                if enc.OUTPUT in taps:
                    reads[enc.OUTPUT] = step.read(audio)
        layers = self.thinker.cfg.num_hidden_layers
        hooks = {i: DeepStack(image_rows, f, t, deep_placed, deep_out) for i, f in enumerate(deep[:layers])}
        positions = rope_index(cfg.config, ids, image_grid_thw, None if lay_a is None else list(lay_a.lengths))
        got = {**self.vision.collect_reads(v_specs, {n: r for n, r in reads.items() if n in v_specs}),
               **(self.audio.collect_reads(a_specs, {n: r for n, r in reads.items() if n in a_specs}) if lay_a else {})}
        return out, hooks, positions, got

    def _with_media(self, hooks, positions, run):
        """Run `run()` on the thinker with the DeepStack hooks and the prompt's positions in place."""
        th = self.thinker
        th.hooks, th.prompt_positions = hooks, positions
        try:
            return run()
        finally:
            th.hooks, th.prompt_positions = {}, None

    def media_forward(self, ids, features, pixel_values, image_grid_thw, taps=(), all_logits: bool = True):
        encoder_names = {a.name for a in self.vision.activations(self.cfg.vision.unit)}
        if self.audio is not None:
            encoder_names |= {a.name for a in self.audio.activations([1])}
        mine = [n for n in taps if n in encoder_names]
        thinker_taps = [f"{LIVE}.embed_tokens" if n == INPUTS_EMBEDS else n for n in taps if n not in encoder_names]
        embeds, hooks, positions, got = self.embeds(ids, features, pixel_values, image_grid_thw, mine)
        out = self._with_media(hooks, positions, lambda: self.thinker.forward(
            embeds=embeds, start=0, taps=thinker_taps, all_logits=all_logits))
        if f"{LIVE}.embed_tokens" in out:  # with embeddings as input, the decoder's first tap is that input
            out[INPUTS_EMBEDS] = out.pop(f"{LIVE}.embed_tokens")
        return {**got, **out}

    def media_generate(self, ids, features, pixel_values, image_grid_thw, max_new_tokens: int, sampler=None,
                       stop_at_eos: bool = True) -> list[int]:
        embeds, hooks, positions, _ = self.embeds(ids, features, pixel_values, image_grid_thw)
        return self._with_media(hooks, positions, lambda: self.thinker.generate(
            ids, max_new_tokens, sampler, stop_at_eos, embeds=embeds))


class ThinkerWithImages(ThinkerWithMedia):
    """ThinkerWithMedia for (input_ids, pixel_values, image_grid_thw); its audio encoder is not loaded."""

    def __init__(self, cfg, ckpt, max_len: int = 2048, progress: bool = False, thinker=None):
        super().__init__(cfg, ckpt, max_len, progress, thinker, audio=False)

    @classmethod
    def input_specs(cls, cfg, ids, pixel_values, image_grid_thw) -> list:
        return cls.media_specs(cfg, ids, None, pixel_values, image_grid_thw)

    @classmethod
    def input_length(cls, cfg, ids, pixel_values, image_grid_thw) -> int:
        return cls.media_length(cfg, ids, None, pixel_values, image_grid_thw)

    def activations(self, ids, pixel_values, image_grid_thw) -> list:
        return self.input_specs(self.cfg, ids, pixel_values, image_grid_thw)

    def tap(self, ids, pixel_values, image_grid_thw, names) -> dict[str, np.ndarray]:
        out = self.forward(ids, pixel_values, image_grid_thw, taps=names)
        return {n: out[n] for n in names}

    def forward(self, ids, pixel_values, image_grid_thw, taps=(), all_logits: bool = True) -> dict[str, np.ndarray]:
        return self.media_forward(ids, None, pixel_values, image_grid_thw, taps, all_logits)

    def generate(self, ids, pixel_values, image_grid_thw, max_new_tokens: int, sampler=None,
                 stop_at_eos: bool = True) -> list[int]:
        return self.media_generate(ids, None, pixel_values, image_grid_thw, max_new_tokens, sampler, stop_at_eos)


class ThinkerWithAudioImages(ThinkerWithMedia):
    """ThinkerWithMedia for (input_ids, input_features, pixel_values, image_grid_thw)."""

    @classmethod
    def input_specs(cls, cfg, ids, features, pixel_values, image_grid_thw) -> list:
        return cls.media_specs(cfg, ids, features, pixel_values, image_grid_thw)

    @classmethod
    def input_length(cls, cfg, ids, features, pixel_values, image_grid_thw) -> int:
        return cls.media_length(cfg, ids, features, pixel_values, image_grid_thw)

    def activations(self, ids, features, pixel_values, image_grid_thw) -> list:
        return self.input_specs(self.cfg, ids, features, pixel_values, image_grid_thw)

    def tap(self, ids, features, pixel_values, image_grid_thw, names) -> dict[str, np.ndarray]:
        out = self.forward(ids, features, pixel_values, image_grid_thw, taps=names)
        return {n: out[n] for n in names}

    def forward(self, ids, features, pixel_values, image_grid_thw, taps=(), all_logits: bool = True):
        return self.media_forward(ids, features, pixel_values, image_grid_thw, taps, all_logits)

    def generate(self, ids, features, pixel_values, image_grid_thw, max_new_tokens: int, sampler=None,
                 stop_at_eos: bool = True) -> list[int]:
        return self.media_generate(ids, features, pixel_values, image_grid_thw, max_new_tokens, sampler, stop_at_eos)


# -- the HF side -------------------------------------------------------------------------------------

def hf_inputs(ids, features, pixel_values, image_grid_thw) -> dict:
    """The thinker's forward kwargs for a prompt with images (and audios), as Qwen3OmniMoeProcessor hands them."""
    import torch

    from . import audio_in

    if features is not None:
        kw = audio_in.hf_inputs(ids, features)
    else:
        t = torch.as_tensor(np.asarray(ids, np.int64)[None])
        kw = {"input_ids": t, "attention_mask": torch.ones_like(t)}
    kw["pixel_values"] = torch.from_numpy(np.asarray(pixel_values, np.float32))
    kw["image_grid_thw"] = torch.as_tensor(np.atleast_2d(np.asarray(image_grid_thw, np.int64)))
    return kw


def hf_media_activations(model, activation_names, ids, features, pixel_values, image_grid_thw) -> dict[str, np.ndarray]:
    """Our activation names (ThinkerWithMedia's) on a transformers Qwen3OmniMoeForConditionalGeneration, one
    thinker forward over the prompt with its images (and audios)."""
    from . import thinker as thinker_side

    names = list(activation_names)
    got: dict[str, np.ndarray] = {}
    handles = ve.hf_hooks(model.thinker.model.visual, names, got)
    handles += enc.tower_hooks(model.thinker.model.audio_tower, names, got)
    if INPUTS_EMBEDS in names:
        def grab(module, args, kwargs):
            got[INPUTS_EMBEDS] = kwargs["inputs_embeds"][0].detach().float().numpy().copy()  # [1, T, D] -> [T, D]
        handles.append(model.thinker.model.language_model.register_forward_pre_hook(grab, with_kwargs=True))
    rest = [n for n in names if n not in got and n not in enc.OWN_HOOKS and n not in (ve.POSITIONS, INPUTS_EMBEDS)]
    try:
        acts = thinker_side.hf_activations(model, rest, ids,
                                           forward_kwargs=hf_inputs(ids, features, pixel_values, image_grid_thw))
    finally:
        for h in handles:
            h.remove()
    merged = {**got, **acts}
    return {n: merged[n] for n in names}  # in the order asked: execution order, which first divergence reads


def hf_activations(model, activation_names, ids, *media) -> dict[str, np.ndarray]:
    """The registry's capture: media are (pixel_values, image_grid_thw) or (features, pixel_values, grid)."""
    features, pixel_values, image_grid_thw = media if len(media) == 3 else (None, *media)
    return hf_media_activations(model, activation_names, ids, features, pixel_values, image_grid_thw)


def hf_deepstack_sensitivity(model, ids, features, pixel_values, image_grid_thw) -> list[float]:
    """How far each DeepStack injection moves Transformers' logits: for feature i (added after thinker layer
    i), the RMS change of the prompt's logits when that feature alone is zeroed, relative to the logits' RMS."""
    import torch

    head = "thinker.lm_head"
    full = hf_media_activations(model, [head], ids, features, pixel_values, image_grid_thw)[head]
    lm = model.thinker.model.language_model
    n = min(len(model.config.thinker_config.vision_config.deepstack_visual_indexes), len(lm.layers))
    moved = []
    for drop in range(n):
        def zero(module, args, kwargs, drop=drop):
            feats = list(kwargs["deepstack_visual_embeds"])
            feats[drop] = torch.zeros_like(feats[drop])
            return args, {**kwargs, "deepstack_visual_embeds": feats}
        handle = lm.register_forward_pre_hook(zero, with_kwargs=True)
        try:
            without = hf_media_activations(model, [head], ids, features, pixel_values, image_grid_thw)[head]
        finally:
            handle.remove()
        moved.append(float(np.sqrt(((without - full) ** 2).mean() / (full ** 2).mean())))
    return moved


def hf_generate(model, ids, features, pixel_values, image_grid_thw, max_new_tokens: int):
    """Transformers' greedy thinker.generate over the prompt with its images (and audios), scores kept."""
    return model.thinker.generate(**hf_inputs(ids, features, pixel_values, image_grid_thw),
                                  max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                                  output_scores=True, return_dict_in_generate=True)
