"""Real-quantized checkpoints: export from the fake-quantized model, load onto the kernels."""

from .checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    check_save_path,
    checkpoint_bytes,
    decode_weight_scale,
    export_quantized,
    has_tokenizer,
    load_quantized,
    packed_weight,
    read_quantization_config,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "check_save_path", "checkpoint_bytes", "decode_weight_scale", "export_quantized",
           "has_tokenizer", "load_quantized", "packed_weight", "read_quantization_config"]
