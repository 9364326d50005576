"""The Hugging Face model families `codegen import` takes, read from a folder's config.json without
torch or transformers: an unsupported architecture is refused before they are imported."""

from __future__ import annotations

from pathlib import Path

from applied_aitk import AitkError

# The decoder families `codegen import` is tested on (tests/test_codegen_import.py): greedy tokens equal
# HF generate(). Others (Gemma 2's soft-capping, DeepSeek's latent attention, ...) are refused by name.
IMPORT_FAMILIES = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "starcoder2", "phi3", "gemma")


def check_family(hf_dir: Path) -> None:
    """AitkError (one line naming the folder and its architecture) unless ``hf_dir/config.json`` names
    a ``model_type`` among ``IMPORT_FAMILIES``; also when there is no config.json."""
    from applied_aitk.files import read_json

    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise AitkError(f"{hf_dir}: not a Hugging Face model directory with config.json")
    config = read_json(path)
    family = config.get("model_type") if isinstance(config, dict) else None
    if family not in IMPORT_FAMILIES:
        names = config.get("architectures") if isinstance(config, dict) else None
        named = f"{names[0]} (model_type {family!r})" if isinstance(names, list) and names else f"model_type {family!r}"
        raise AitkError(f"{hf_dir}: architecture {named} is not supported; codegen import takes {', '.join(IMPORT_FAMILIES)}")
