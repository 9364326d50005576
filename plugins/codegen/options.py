"""The sampling options `codegen predict` and `codegen complete` share, declared once, and the
Sampling they describe. Module level imports stay light (stdlib and toolkit)."""

from __future__ import annotations

from typing import Any

from applied_aitk.bundle import Bundle
from applied_aitk.usecase import Option

SAMPLING_OPTIONS = [
    Option("max_new_tokens", int, None, "Most tokens to generate per prompt (default: 128, at most half the context)."),
    Option("temperature", float, 0.0, "0 = greedy; above 0 samples."),
    Option("top_k", int, 0, "Sample among the k most likely tokens (0: off)."),
    Option("top_p", float, 1.0, "Sample among the most likely tokens holding this much probability."),
    Option("repetition_penalty", float, 1.0, "Above 1 discourages tokens already present."),
    Option("seed", int, 0, "Sampling seed."),
    Option("stop", str, None, 'Stop sequence ("\\n\\n") or a JSON list of them.'),
]


def default_new_tokens(bundle: Bundle) -> int:
    return min(128, bundle.assets["context"] // 2)


def sampling_from(options: dict[str, Any], bundle: Bundle):
    """The Sampling of the given sampling options (None or absent: the option's default) for ``bundle``;
    other keys (``on_long``) pass through to Sampling when set."""
    from applied_aitk.usecases.codegen.generate import Sampling, parse_stop

    settings = {o.name: o.default for o in SAMPLING_OPTIONS}
    settings.update({k: v for k, v in options.items() if v is not None})
    settings["stop"] = parse_stop(settings["stop"])
    if settings["max_new_tokens"] is None:  # 0 stays 0, refused by Sampling.check
        settings["max_new_tokens"] = default_new_tokens(bundle)
    return Sampling(**settings)
