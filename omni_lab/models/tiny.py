"""Tiny random checkpoints of the real architectures, written by Transformers itself.

Nothing is downloaded: the weights come from Transformers' own initialisation under a seed, and the
tokenizer is a byte-level BPE trained here, with the `tokenizers` package, on a few sentences of English
and Russian, so text prompts (Cyrillic included) work end to end.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CORPUS = [
    "The quick brown fox jumps over the lazy dog. A researcher brings up a model on a new GPU and checks it.",
    "Hello, world! How are you today? We compare every layer with the reference implementation.",
    "Speech in, speech out: the thinker reads text and audio, the talker speaks, the vocoder makes sound.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю. Привет, мир! Как дела?",
    "Модель работает на видеокарте, и мы сравниваем каждый слой с эталоном.",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 + - * / = ( ) [ ] { } < > : ; , . ! ?",
]

# Qwen's chat template, reduced to what the tiny tokenizer knows (no tools, no thinking blocks).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Shapes of the dense Qwen3 checkpoints we build. "qwen3-0.6b" has Qwen3-0.6B's exact shapes (random
# weights) for benchmarks and full-size checks; the others are small and differ in every dimension that
# a kernel could get wrong (GQA ratio, head_dim, ragged widths, a sliding-window layer).
QWEN3_PRESETS = {
    "tiny": dict(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True),
    "tiny-gqa": dict(vocab_size=400, hidden_size=96, intermediate_size=200, num_hidden_layers=3,
                     num_attention_heads=6, num_key_value_heads=2, head_dim=24, tie_word_embeddings=False,
                     use_sliding_window=True, sliding_window=5, max_window_layers=1,
                     layer_types=["full_attention", "sliding_attention", "sliding_attention"]),
    # Head dim 32: whole Q8_0 blocks a head, so a Q8_0 copy's decode attention writes o_proj's int8 input.
    "tiny-hd32": dict(vocab_size=384, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=1, head_dim=32, tie_word_embeddings=True,
                      use_sliding_window=True, sliding_window=6, max_window_layers=1,
                      layer_types=["full_attention", "sliding_attention"]),
    "qwen3-0.6b": dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                       max_position_embeddings=40960, rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"}),
}


def train_tokenizer(vocab_size: int = 384):
    """A byte-level BPE tokenizer trained on CORPUS, wrapped for Transformers, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _write_atomically(out: Path, write) -> Path:
    """Build into a temporary sibling directory that takes `out`'s place when complete (omni_lab/atomic.py)."""
    from ..atomic import atomic_dir

    with atomic_dir(out) as tmp:
        write(tmp)
    return Path(out)


def build_tiny_qwen3(out: str | Path, seed: int = 0, preset: str = "tiny") -> Path:
    """Write a random Qwen3ForCausalLM checkpoint (BF16 safetensors) and its tokenizer to `out`."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if preset not in QWEN3_PRESETS:
        raise ValueError(f"unknown preset '{preset}'; choose one of {', '.join(QWEN3_PRESETS)}")
    shape = dict(QWEN3_PRESETS[preset])
    tokenizer = train_tokenizer(min(shape["vocab_size"], 384))
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen3Config(
        **shape, rms_norm_eps=1e-6,
        # A wider initialisation than the default 0.02 gives tiny models decisive logits, so greedy
        # decoding is rarely a near tie.
        initializer_range=0.1 if preset != "qwen3-0.6b" else 0.02,
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )

    def write(tmp: Path) -> None:
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
        model.generation_config.do_sample = False
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _write_atomically(Path(out), write)
