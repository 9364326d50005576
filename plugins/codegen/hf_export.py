"""`aitk codegen export-hf`: a codegen bundle back to a Hugging Face folder (config.json,
model.safetensors, generation_config.json, tokenizer.json + tokenizer_config.json) that
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from applied_aitk import AitkError
from applied_aitk.files import replace_dir


def check_target(out: Path, force: bool) -> None:
    """Refuse to write over ``out`` unless ``force`` and it is a Hugging Face folder (has config.json) or empty."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not force:
        raise AitkError(f"{out}: already exists; --force replaces a Hugging Face model folder")
    if not (out / "config.json").is_file():
        raise AitkError(f"{out}: exists and is not a Hugging Face model folder (no config.json); not replacing it, even with --force")


def export_hf(bundle, out: Path) -> Path:
    """Write ``bundle``'s transformers model (its ``model_config.json`` + ``weights.safetensors``: the
    source architecture's config for an import, GPT-2 or Llama for a trained model) and its tokenizer
    (end-of-sequence and padding tokens set from the manifest) as the folder ``out``, atomically."""
    from transformers import CONFIG_MAPPING, PreTrainedTokenizerFast

    from applied_aitk.usecases.codegen.data import load_tokenizer
    from applied_aitk.usecases.codegen.model import load_bundle_model

    files = bundle.manifest["files"]
    if "model_config.json" not in files or "weights.safetensors" not in files:
        raise AitkError(f"{bundle.path}: has no model_config.json + weights.safetensors (the transformers model); cannot export it")
    family = bundle.read_json("model_config.json").get("model_type")
    if family not in CONFIG_MAPPING:
        raise AitkError(f"{bundle.path}: model_type {family!r} is not an architecture the installed transformers knows; cannot export it")
    model = load_bundle_model(bundle)
    tokenizer = load_tokenizer(bundle.file("tokenizer.json"))
    assets = bundle.manifest["assets"]
    eos, pad = assets.get("eos_ids") or [], assets.get("pad_id")
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=tokenizer.id_to_token(eos[0]) if eos else None,
                                   pad_token=tokenizer.id_to_token(pad) if pad is not None else None)
    model.generation_config.update(eos_token_id=eos[0] if len(eos) == 1 else eos or None, pad_token_id=pad)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        fast.save_pretrained(tmp)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
