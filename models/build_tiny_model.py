"""Build models/tiny-llama: a 2-layer Llama config and a BPE tokenizer, no weights.

The folder is for tests and demos with real engines started with random weights
(vLLM's `load_format="dummy"`): only config.json and the tokenizer files are read,
so nothing is downloaded and nothing large is kept in the repository.

The tokenizer is a byte-level BPE trained with the `tokenizers` library on the
bundled prompt corpus (workloads/corpus/*.txt), so any text encodes (unknown bytes
fall back to byte tokens) and prompts cut from the corpus encode compactly.

Run from the repository root, in an environment that has `tokenizers`
(the vLLM venv has it):  python models/build_tiny_model.py [--out models/tiny-llama]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "workloads" / "corpus"

VOCAB_SIZE = 1024
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = [BOS, EOS, PAD]  # ids 0, 1, 2
# Prompts of the bundled workloads reach several thousand tokens with this small
# vocabulary (a chunk of "1024 tokens" is counted with a Llama-3-like estimate).
MAX_POSITIONS = 16384

# A minimal chat template so that OpenAI-compatible servers accept chat requests.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


def llama_config() -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "vocab_size": VOCAB_SIZE,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 2,
        "torch_dtype": "bfloat16",
        "attention_bias": False,
        "mlp_bias": False,
        "use_cache": True,
    }


def corpus_files() -> list[str]:
    files = sorted(str(p) for p in CORPUS.glob("*.txt"))
    if not files:
        raise SystemExit(f"build_tiny_model: no corpus files in {CORPUS}")
    return files


def train_tokenizer(files: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,  # the corpus is small: take every merge it offers
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(files, trainer)
    # Llama-style: a BOS token in front of every encoded prompt.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 0)]
    )
    return tok


def write(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(corpus_files())
    if tok.get_vocab_size() > VOCAB_SIZE:
        raise SystemExit(f"build_tiny_model: vocab {tok.get_vocab_size()} > {VOCAB_SIZE}")
    tok.save(str(out / "tokenizer.json"))
    (out / "config.json").write_text(json.dumps(llama_config(), indent=2) + "\n")
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "add_bos_token": True,
        "model_max_length": MAX_POSITIONS,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    print(f"wrote {out} (tokenizer vocab {tok.get_vocab_size()}, config vocab {VOCAB_SIZE})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "models" / "tiny-llama"))
    args = ap.parse_args(argv)
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        print("build_tiny_model: needs the `tokenizers` package (pip install tokenizers)",
              file=sys.stderr)
        return 2
    write(Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
