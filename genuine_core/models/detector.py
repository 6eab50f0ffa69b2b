"""Signal detector B: torchvision RetinaNet for FISH signals (1 NMI, 2 MYCN, 3 MYCN cluster).

Random initialisation only (nothing is downloaded). Patches are never resized: the
detector works at the patch's own resolution with anchors sized for 3-25 px signals.

Detections use torchvision's format: one dict per patch with ``boxes`` ``(M, 4)`` float
(x1, y1, x2, y2 in patch pixels), ``scores`` ``(M,)`` float and ``labels`` ``(M,)`` int64,
sorted by decreasing score.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from functools import partial

import torch
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelP6P7

from genuine_core.models.config import (
    BOX_FEATURES,
    NUM_SIGNAL_CLASSES,
    DetectorConfig,
    _groupnorm_groups,
)
from genuine_core.models.trunk import ResNetTrunk, stage_channels

Detections = list[dict[str, torch.Tensor]]

# Active memo of :func:`shared_detections`: fingerprints by detector id, and results by
# (detector fingerprint, batch digest).
_SHARED: ContextVar[dict | None] = ContextVar("genuine_shared_detections", default=None)


def _digest(tensors) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()


@contextlib.contextmanager
def shared_detections() -> Iterator[None]:
    """Run each distinct detector once per distinct input batch inside this block.

    GENUINE and the detector baseline usually carry the same frozen detector; scoring
    both on the same patches would run it twice. Inside the block, a detector whose
    weights equal an earlier one's (compared by a digest of its state) returns the
    earlier result for a batch of identical values. The memo lives only for the outermost
    block (a nested block joins it), so weights changed outside it are never served stale
    results.
    """
    if _SHARED.get() is not None:
        yield
        return
    token = _SHARED.set({"fingerprints": {}, "results": {}})
    try:
        yield
    finally:
        _SHARED.reset(token)


class _NoExtraLevels(ExtraFPNBlock):
    """FPN without extra pooled levels (torchvision adds a max-pool level by default)."""

    def forward(self, results, x, names):
        return results, names


class _PatchTransform(GeneralizedRCNNTransform):
    """RetinaNet's input transform without resizing (normalise + batch only)."""

    def resize(self, image, target=None):
        return image, target


class SignalDetector(nn.Module):
    """RetinaNet on a (possibly truncated) ResNet trunk + FPN, 3 signal classes.

    Call it like a torchvision detector: in train mode ``detector(images, targets)``
    returns the loss dict (``classification``, ``bbox_regression``); in eval mode
    ``detector(images)`` returns :data:`Detections`. ``images`` is a ``(N, 3, P, P)``
    float tensor in [0, 1] or a list of ``(3, P, P)`` tensors; ``targets`` a list of
    dicts with ``boxes`` ``(M, 4)`` float and ``labels`` ``(M,)`` int64 in 1..3.

    Args:
        config: detector settings.
        patch_size: P; the transform is set to P so it never rescales.
    """

    def __init__(self, config: DetectorConfig, patch_size: int) -> None:
        super().__init__()
        self.config = config
        self.patch_size = patch_size
        c = config
        trunk = ResNetTrunk(c.backbone, c.width, max(c.returned_layers))
        in_channels = [stage_channels(c.backbone, c.width, k) for k in c.returned_layers]
        backbone = BackboneWithFPN(
            trunk,
            return_layers={f"layer{k}": str(i) for i, k in enumerate(c.returned_layers)},
            in_channels_list=in_channels,
            out_channels=c.fpn_channels,
            extra_blocks=LastLevelP6P7(c.fpn_channels, c.fpn_channels) if c.extra_levels else _NoExtraLevels(),
        )
        anchors = AnchorGenerator(sizes=tuple(tuple(s) for s in c.anchor_sizes),
                                  aspect_ratios=(tuple(c.aspect_ratios),) * c.num_levels)
        norm = partial(nn.GroupNorm, _groupnorm_groups(c.fpn_channels)) if c.head_groupnorm else None
        num_classes = NUM_SIGNAL_CLASSES + 1  # torchvision indexes labels directly; 0 stays unused
        head = RetinaNetHead(c.fpn_channels, anchors.num_anchors_per_location()[0], num_classes, norm_layer=norm)
        for branch in (head.classification_head, head.regression_head):
            branch.conv = nn.Sequential(*list(branch.conv)[: c.head_convs])
        self.retinanet = RetinaNet(
            backbone, num_classes, min_size=patch_size, max_size=patch_size,
            image_mean=list(c.image_mean), image_std=list(c.image_std),
            anchor_generator=anchors, head=head, score_thresh=c.score_thresh, nms_thresh=c.nms_thresh,
            detections_per_img=c.detections_per_img, fg_iou_thresh=c.fg_iou_thresh,
            bg_iou_thresh=c.bg_iou_thresh, topk_candidates=c.topk_candidates,
        )
        self.retinanet.transform = _PatchTransform(patch_size, patch_size, list(c.image_mean), list(c.image_std),
                                                   size_divisible=32)

    def forward(self, images, targets: Sequence[dict[str, torch.Tensor]] | None = None):
        """Losses (train mode, with targets) or detections (eval mode)."""
        if isinstance(images, torch.Tensor) and images.dim() == 3:
            images = images.unsqueeze(0)
        return self.retinanet(images, None if targets is None else list(targets))

    @torch.no_grad()
    def detect(self, images: torch.Tensor) -> Detections:
        """Detections for ``(N, 3, P, P)`` patches, background slot dropped.

        Runs in eval mode whatever the module's mode (restored afterwards). Inside
        :func:`shared_detections`, a repeated call on the same values is served from memory.
        """
        memo = _SHARED.get()
        if memo is None:
            return self._detect(images)
        fingerprint = memo["fingerprints"].get(id(self))
        if fingerprint is None:
            fingerprint = memo["fingerprints"][id(self)] = _digest(self.state_dict().values())
        key = (fingerprint, _digest([images]))
        if key not in memo["results"]:
            memo["results"][key] = self._detect(images)
        return memo["results"][key]

    def _detect(self, images: torch.Tensor) -> Detections:
        was_training = self.training
        self.eval()
        try:
            out = self.retinanet(images)
        finally:
            self.train(was_training)
        cleaned = []
        for d in out:
            keep = d["labels"] > 0
            if self.config.containment_thresh > 0:
                keep &= ~nested_in_better(d["boxes"], d["scores"], d["labels"], self.config.containment_thresh)
            cleaned.append({k: v[keep] for k, v in d.items()})
        return cleaned


def nested_in_better(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, thresh: float) -> torch.Tensor:
    """``(M,)`` bool: the box overlaps a higher-scoring box of its class by more than
    ``thresh`` of the smaller box's area (intersection over minimum).

    Judged against every better box at once (not greedily), like YOLACT's fast NMS.
    """
    if len(boxes) < 2:
        return torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    area = (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    iomin = inter / torch.minimum(area[:, None], area[None, :]).clamp_min(1e-6)
    idx = torch.arange(len(scores), device=boxes.device)
    better = (scores[None, :] > scores[:, None]) | ((scores[None, :] == scores[:, None]) & (idx[None, :] < idx[:, None]))
    same = labels[:, None] == labels[None, :]
    return ((iomin > thresh) & better & same).any(1)


def freeze(module: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter and switch to eval mode."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def detections_to_features(detections: Detections, top_k: int, patch_size: int) -> torch.Tensor:
    """Flatten detections into fixed-length vectors (the paper's ``Flatten(B(P))``).

    For each class 1..3 the ``top_k`` highest-scoring boxes become rows
    ``(x1 / P, y1 / P, x2 / P, y2 / P, class, score)``, zero-padded to ``top_k`` rows,
    class-major (all NMI rows, then MYCN, then cluster).

    Args:
        detections: one dict per patch (``boxes``, ``scores``, ``labels``).
        top_k: rows kept per class.
        patch_size: P, to normalise coordinates into [0, 1].

    Returns:
        ``(N, 3 * top_k * 6)`` float32 tensor on the detections' device.
    """
    if top_k < 1:
        raise ValueError("top_k must be >= 1")
    n = len(detections)
    device = detections[0]["boxes"].device if n else torch.device("cpu")
    out = torch.zeros(n, NUM_SIGNAL_CLASSES, top_k, BOX_FEATURES, dtype=torch.float32, device=device)
    if n == 0:
        return out.reshape(0, NUM_SIGNAL_CLASSES * top_k * BOX_FEATURES)
    img = torch.cat([torch.full((len(d["scores"]),), i, dtype=torch.int64, device=device)
                     for i, d in enumerate(detections)])
    boxes = torch.cat([d["boxes"] for d in detections]).float()
    scores = torch.cat([d["scores"] for d in detections]).float()
    labels = torch.cat([d["labels"] for d in detections]).long()
    valid = (labels >= 1) & (labels <= NUM_SIGNAL_CLASSES)
    img, boxes, scores, labels = img[valid], boxes[valid], scores[valid], labels[valid]
    if len(scores):
        order = torch.argsort(scores, descending=True, stable=True)
        group = (img * (NUM_SIGNAL_CLASSES + 1) + labels)[order]
        order = order[torch.argsort(group, stable=True)]  # by (patch, class), score-descending inside
        group = (img * (NUM_SIGNAL_CLASSES + 1) + labels)[order]
        _, counts = torch.unique_consecutive(group, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(order), device=device) - torch.repeat_interleave(starts, counts)
        keep = rank < top_k
        sel, rank = order[keep], rank[keep]
        rows = torch.cat([boxes[sel] / float(patch_size), labels[sel, None].float(), scores[sel, None]], 1)
        out[img[sel], labels[sel] - 1, rank] = rows
    return out.reshape(n, -1)


def count_detections(detections: Detections, score_threshold: float | Sequence[float]) -> torch.Tensor:
    """Per-patch signal counts: boxes with ``score >= score_threshold`` per class.

    Args:
        detections: per-patch detector outputs.
        score_threshold: one threshold, or one per class (NMI, MYCN, cluster).

    Returns:
        ``(N, 3)`` int64 tensor, columns (NMI, MYCN, cluster).
    """
    n = len(detections)
    device = detections[0]["scores"].device if n else torch.device("cpu")
    per_class = torch.as_tensor(score_threshold, dtype=torch.float32, device=device).expand(NUM_SIGNAL_CLASSES)
    counts = torch.zeros(n, NUM_SIGNAL_CLASSES, dtype=torch.int64, device=device)
    for i, d in enumerate(detections):
        labels = d["labels"].long()
        valid = (labels >= 1) & (labels <= NUM_SIGNAL_CLASSES)
        labels, scores = labels[valid], d["scores"][valid]
        labels = labels[scores >= per_class[labels - 1]]
        counts[i] = torch.bincount(labels - 1, minlength=NUM_SIGNAL_CLASSES)[:NUM_SIGNAL_CLASSES]
    return counts
