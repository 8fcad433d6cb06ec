"""Weight formats: safetensors checkpoints, GGUF via the gguf package, Q8_0, the streaming quantizer,
and the one table per naming scheme (HF checkpoint keys <-> live module paths <-> GGUF names)."""
