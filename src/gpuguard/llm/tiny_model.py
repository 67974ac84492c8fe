"""Write a tiny llama-architecture GGUF with random weights, for tests and the demo.

The model is real enough for llama.cpp to load, chat and embed with, and small enough
(about 150 KB) to write in milliseconds. Its weights are random: its output is meaningless
noise. It exists to exercise the plumbing (load, unload, streaming, cancellation, the GPU
guard), never to answer questions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["TINY_CHAT_TEMPLATE", "TINY_CONTEXT", "write_tiny_gguf"]

#: A ChatML-style template: enough for llama.cpp to format chat messages.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_SPECIAL_TOKENS = ("<s>", "</s>", "<|im_start|>", "<|im_end|>")
_MERGES = ("Ġ t", "Ġ a", "h e")
_EMBEDDING = 32
_HEADS = 2
_FEED_FORWARD = 64
TINY_CONTEXT = 4096
"""The generated model's context length in tokens."""
_TOKEN_NORMAL = 1
_TOKEN_CONTROL = 3


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode table: one printable character for each of the 256 bytes."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for byte in range(256):
        if byte not in chars:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_tiny_gguf(path: str | Path, *, seed: int = 0) -> Path:
    """Write a one-layer llama GGUF with random weights to ``path`` and return the path.

    It has a byte-level ``gpt2`` tokenizer (every byte, a few merges, ChatML special
    tokens) and a chat template, so ``llama_cpp.Llama`` and ``python -m llama_cpp.server``
    can load it and stream chat completions. Mean pooling makes it usable with
    ``embedding=True``. The output is meaningless: the weights are random noise.
    """
    # Imported only when called: gguf is a dev dependency, numpy an optional one.
    import gguf
    import numpy as np

    path = Path(path)
    tokens = [*_byte_tokens(), *("".join(m.split()) for m in _MERGES), *_SPECIAL_TOKENS]
    token_types = [_TOKEN_NORMAL] * (len(tokens) - len(_SPECIAL_TOKENS)) + [_TOKEN_CONTROL] * len(
        _SPECIAL_TOKENS
    )
    vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("gpuguard-tiny-random")
    writer.add_description("Random weights for tests: the output is meaningless.")
    writer.add_context_length(TINY_CONTEXT)
    writer.add_embedding_length(_EMBEDDING)
    writer.add_block_count(1)
    writer.add_feed_forward_length(_FEED_FORWARD)
    writer.add_head_count(_HEADS)
    writer.add_head_count_kv(_HEADS)
    writer.add_rope_dimension_count(_EMBEDDING // _HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(list(_MERGES))
    writer.add_bos_token_id(tokens.index("<s>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(TINY_CHAT_TEMPLATE)

    writer.add_tensor("token_embd.weight", weights(vocab, _EMBEDDING))
    writer.add_tensor("output_norm.weight", np.ones(_EMBEDDING, dtype=np.float32))
    writer.add_tensor("output.weight", weights(vocab, _EMBEDDING))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(_EMBEDDING, dtype=np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        writer.add_tensor(f"blk.0.{name}.weight", weights(_EMBEDDING, _EMBEDDING))
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(_EMBEDDING, dtype=np.float32))
    writer.add_tensor("blk.0.ffn_gate.weight", weights(_FEED_FORWARD, _EMBEDDING))
    writer.add_tensor("blk.0.ffn_up.weight", weights(_FEED_FORWARD, _EMBEDDING))
    writer.add_tensor("blk.0.ffn_down.weight", weights(_EMBEDDING, _FEED_FORWARD))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
