"""Training augmentations on batched torch tensors (paper section 3.2).

The paper lists random affine transforms, vertical and horizontal flips, random
intensity scaling, random dropping of the red (NMI) and blue (DAPI) channels, and
additive noise. All of them are implemented here on a batch ``(N, 3, P, P)`` float32
tensor in [0, 1], drawing every random number from an explicit
``torch.Generator`` so a run is reproducible.

Two more model what changes between scanners and scan days besides brightness and
noise (see ``genuine_core.synth.acquisition``): extra optical blur (random Gaussian
sigma) and channel bleed-through (DAPI into MYCN, MYCN into NMI), as on the benchmark's
shifted mixture scans, where the models still over-call MNA (``reports/evaluation.md``,
Table 3). Both leave the signals where they are, so the detector uses them too (the
boxes keep their place; blur of at most 1.5 px widens a 3-4 px spot by under 20 %).

Invariants kept by every transform:

- shape and dtype are unchanged and values stay in [0, 1];
- pixels outside the nucleus (exactly 0 in every channel, see
  ``genuine_core.patches``) stay 0: noise is added only inside the nucleus.

For detector training (:func:`augment_detection`) only box-exact geometric
transforms are used (flips and 90 degree rotations) plus the photometric ones that
do not change the signals' identity (blur, bleed-through, intensity scaling, noise); boxes ``(M, 4)``
``x1, y1, x2, y2`` in patch pixel coordinates are transformed with the image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p}")


def _check_range(name: str, pair: tuple[float, float], lo: float) -> None:
    if len(pair) != 2 or not (lo <= pair[0] <= pair[1] < math.inf):
        raise ValueError(f"{name} must be (low, high) with {lo} <= low <= high, finite, got {pair!r}")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; every probability is per patch.

    Attributes:
        p_hflip, p_vflip: probability of a horizontal / vertical flip.
        p_affine: probability of a random affine warp.
        rotate_deg: rotation drawn uniformly from ``[-rotate_deg, rotate_deg]``.
        translate_px: shift drawn uniformly from ``[-translate_px, translate_px]`` per axis.
        scale: isotropic zoom range; kept near 1 because signal size carries meaning
            (large spots read as clusters, paper Fig. 4A).
        shear_deg: shear drawn from ``[-shear_deg, shear_deg]``.
        intensity: per-channel multiplicative factor range.
        p_drop_red, p_drop_blue: probability of zeroing the NMI / DAPI channel.
        noise_std: Gaussian noise sd drawn per patch from ``[0, noise_std]``
            (intensity units), added inside the nucleus only.
        p_blur: probability of an extra Gaussian blur.
        blur_sigma: blur sd range in pixels, drawn per patch.
        crosstalk: bleed-through fractions (DAPI into MYCN, MYCN into NMI) drawn per
            patch from ``[0, crosstalk]``.
        p_no_mycn: probability of removing every MYCN signal (:func:`remove_mycn_signals`);
            the patch is then labelled non-MNA. Classifier training only; 0 (off) by default.
    """

    p_hflip: float = 0.5
    p_vflip: float = 0.5
    p_affine: float = 0.7
    rotate_deg: float = 180.0
    translate_px: float = 4.0
    scale: tuple[float, float] = (0.92, 1.08)
    shear_deg: float = 4.0
    intensity: tuple[float, float] = (0.8, 1.2)
    p_drop_red: float = 0.05
    p_drop_blue: float = 0.1
    noise_std: float = 0.03
    p_blur: float = 0.5
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    crosstalk: float = 0.08
    p_no_mycn: float = 0.0

    def __post_init__(self) -> None:
        for name in ("p_hflip", "p_vflip", "p_affine", "p_drop_red", "p_drop_blue", "p_blur", "p_no_mycn"):
            _check_prob(name, getattr(self, name))
        for name in ("scale", "intensity", "blur_sigma"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        _check_range("scale", self.scale, 1e-3)
        _check_range("intensity", self.intensity, 0.0)
        _check_range("blur_sigma", self.blur_sigma, 0.0)
        if self.blur_sigma[1] > 8:
            raise ValueError(f"blur_sigma must stay <= 8 px, got {self.blur_sigma!r}")
        if not 0 <= self.crosstalk <= 1:  # a fraction of one channel bled into another (NaN fails too)
            raise ValueError(f"crosstalk must be in [0, 1], got {self.crosstalk}")
        for name in ("rotate_deg", "translate_px", "shear_deg", "noise_std"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be >= 0 and finite, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        """Plain-JSON view."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    @classmethod
    def none(cls) -> "AugmentConfig":
        """A config that leaves patches unchanged."""
        return cls(p_hflip=0, p_vflip=0, p_affine=0, intensity=(1.0, 1.0), p_drop_red=0,
                   p_drop_blue=0, noise_std=0, p_blur=0, crosstalk=0)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)


def _bernoulli(n: int, p: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) < p


def _check_batch(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise ValueError(f"expected a batch (N, 3, P, P), got shape {tuple(x.shape)}")


def _inside(x: torch.Tensor) -> torch.Tensor:
    """``(N, 1, P, P)`` 1 inside the nucleus (any channel > 0), 0 outside."""
    return (x.amax(dim=1, keepdim=True) > 0).to(x.dtype)


def random_affine(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Random rotation/shift/zoom/shear about the patch centre (bilinear, zero fill).

    Args:
        x: ``(N, 3, P, P)`` float32.
        cfg: strengths; patches not selected by ``p_affine`` are returned unchanged.
        gen: torch generator.
    """
    n, _, p, _ = x.shape
    dev = x.device
    apply = _bernoulli(n, cfg.p_affine, gen, dev)
    ang = torch.deg2rad(_uniform(n, -cfg.rotate_deg, cfg.rotate_deg, gen, dev))
    shear = torch.deg2rad(_uniform(n, -cfg.shear_deg, cfg.shear_deg, gen, dev))
    zoom = _uniform(n, cfg.scale[0], cfg.scale[1], gen, dev)
    # affine_grid maps output coords to input coords in [-1, 1]; shift in those units.
    shift = _uniform(2 * n, -cfg.translate_px, cfg.translate_px, gen, dev).view(n, 2) * (2.0 / p)
    cos, sin = torch.cos(ang), torch.sin(ang)
    tan_s = torch.tan(shear)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = cos / zoom
    theta[:, 0, 1] = (-sin + cos * tan_s) / zoom
    theta[:, 1, 0] = sin / zoom
    theta[:, 1, 1] = (cos + sin * tan_s) / zoom
    theta[:, :, 2] = shift
    ident = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=dev)
    theta = torch.where(apply.view(n, 1, 1), theta, ident)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.where(apply.view(n, 1, 1, 1), out, x)


def random_flips(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Independent horizontal and vertical flips per patch."""
    n = x.shape[0]
    h = _bernoulli(n, cfg.p_hflip, gen, x.device).view(n, 1, 1, 1)
    v = _bernoulli(n, cfg.p_vflip, gen, x.device).view(n, 1, 1, 1)
    x = torch.where(h, x.flip(3), x)
    return torch.where(v, x.flip(2), x)


def photometric(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator,
                drop_channels: bool = True) -> torch.Tensor:
    """Per-channel intensity scaling, red/blue channel drop and in-nucleus noise.

    Args:
        x: ``(N, 3, P, P)`` float32 in [0, 1].
        cfg: strengths.
        gen: torch generator.
        drop_channels: whether to apply the red/blue channel drop (off for detector
            training, where a dropped NMI channel would contradict its boxes).
    """
    n = x.shape[0]
    dev = x.device
    inside = _inside(x)
    gain = _uniform(3 * n, cfg.intensity[0], cfg.intensity[1], gen, dev).view(n, 3, 1, 1)
    x = x * gain
    if drop_channels:
        keep = torch.ones(n, 3, 1, 1, device=dev)
        keep[:, 0, 0, 0] = (~_bernoulli(n, cfg.p_drop_red, gen, dev)).float()
        keep[:, 2, 0, 0] = (~_bernoulli(n, cfg.p_drop_blue, gen, dev)).float()
        x = x * keep
    if cfg.noise_std > 0:
        sd = _uniform(n, 0.0, cfg.noise_std, gen, dev).view(n, 1, 1, 1)
        noise = torch.randn(x.shape, generator=gen, device=dev) * sd
        x = x + noise * inside
    return x.clamp_(0.0, 1.0)


def random_blur(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Extra optical blur: a separable Gaussian of per-patch sigma, background kept at 0.

    Args:
        x: ``(N, 3, P, P)`` float32.
        cfg: ``p_blur`` and ``blur_sigma`` (pixels); unselected patches are returned unchanged.
        gen: torch generator.
    """
    n, c, p, _ = x.shape
    dev = x.device
    apply = _bernoulli(n, cfg.p_blur, gen, dev)
    sigma = _uniform(n, cfg.blur_sigma[0], cfg.blur_sigma[1], gen, dev).clamp_min(1e-3)
    if not bool(apply.any()) or cfg.blur_sigma[1] <= 0:
        return x
    r = max(1, math.ceil(3 * cfg.blur_sigma[1]))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=dev)
    k = torch.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N * 3, 2r + 1)
    y = F.conv2d(F.pad(x.reshape(1, n * c, p, p), (r, r, 0, 0)), k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, r, r)), k.view(n * c, 1, -1, 1), groups=n * c).view(n, c, p, p)
    return torch.where(apply.view(n, 1, 1, 1), y * _inside(x), x)


def random_crosstalk(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Channel bleed-through: MYCN += a * DAPI, NMI += b * MYCN, a and b from ``[0, crosstalk]`` per patch."""
    n = x.shape[0]
    ab = _uniform(2 * n, 0.0, cfg.crosstalk, gen, x.device).view(n, 2, 1, 1)
    if cfg.crosstalk <= 0:
        return x
    red, green, blue = x.unbind(1)
    return torch.stack([red + ab[:, 1] * green, green + ab[:, 0] * blue, blue], 1).clamp_(0.0, 1.0)


def remove_mycn_signals(x: torch.Tensor, p: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Erase every MYCN signal of a random ``p`` share of the patches.

    The MYCN channel of a chosen patch is capped at its median inside the nucleus: the spots go,
    the background stays. A nucleus with no MYCN signal is not amplified (Cohn rule), so the
    caller labels these patches non-MNA. Such nuclei are rare in the benchmark (under 1 %), and
    without this GENUINE called about 1 in 8 probe nuclei with 0 or 1 MYCN signals MNA.

    Args:
        x: ``(N, 3, P, P)`` float32 (not modified in place).
        p: probability per patch; with ``p == 0`` no random number is drawn.
        gen: torch generator.

    Returns:
        The patches and ``(N,)`` bool, True where the signals were removed.
    """
    chosen = _bernoulli(x.shape[0], p, gen, x.device) if p > 0 \
        else torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    if not bool(chosen.any()):
        return x, chosen
    x = x.clone()
    inside = _inside(x)[:, 0] > 0
    for i in torch.nonzero(chosen).flatten().tolist():
        green = x[i, 1]
        if bool(inside[i].any()):
            green.clamp_(max=float(green[inside[i]].median()))
    return x, chosen


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Full classification augmentation: affine, flips, blur, crosstalk, then photometric.

    Args:
        x: ``(N, 3, P, P)`` float32 in [0, 1] (not modified in place).
        cfg: strengths.
        gen: torch generator (same seed -> same output).

    Returns:
        ``(N, 3, P, P)`` float32 in [0, 1].
    """
    _check_batch(x)
    x = x.float()
    x = random_affine(x, cfg, gen)
    x = random_flips(x, cfg, gen)
    if cfg.p_blur > 0:  # off: no random numbers drawn, so runs made before blur and bleed-through repeat
        x = random_blur(x, cfg, gen)
    if cfg.crosstalk > 0:
        x = random_crosstalk(x, cfg, gen)
    return photometric(x, cfg, gen, drop_channels=True)


def transform_boxes(boxes: torch.Tensor, size: int, hflip: bool, vflip: bool, rot90: int) -> torch.Tensor:
    """Apply to boxes what :func:`_geometric_image` applies to the image.

    Order: horizontal flip, vertical flip, then ``rot90`` quarter turns
    counter-clockwise (as ``torch.rot90(img, k, dims=(-2, -1))``).

    Args:
        boxes: ``(M, 4)`` float ``x1, y1, x2, y2`` in pixels of a ``size x size`` patch.
        size: patch side ``P``.

    Returns:
        ``(M, 4)`` transformed boxes, still with ``x1 <= x2`` and ``y1 <= y2``.
    """
    b = boxes.clone().float()
    if b.numel() == 0:
        return b.reshape(0, 4)
    x1, y1, x2, y2 = b.unbind(1)
    if hflip:
        x1, x2 = size - x2, size - x1
    if vflip:
        y1, y2 = size - y2, size - y1
    for _ in range(rot90 % 4):
        # one CCW quarter turn: (x, y) -> (y, P - x)
        x1, y1, x2, y2 = y1, size - x2, y2, size - x1
    return torch.stack([x1, y1, x2, y2], dim=1)


def _geometric_image(img: torch.Tensor, hflip: bool, vflip: bool, rot90: int) -> torch.Tensor:
    if hflip:
        img = img.flip(-1)
    if vflip:
        img = img.flip(-2)
    if rot90 % 4:
        img = torch.rot90(img, rot90 % 4, dims=(-2, -1))
    return img


def augment_detection(
    x: torch.Tensor, boxes: list[torch.Tensor], cfg: AugmentConfig, gen: torch.Generator
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Detector-safe augmentation: flips, 90 degree turns, blur, bleed-through, intensity, noise.

    Args:
        x: ``(N, 3, P, P)`` float32 in [0, 1].
        boxes: N tensors ``(M_i, 4)`` in patch pixel coordinates.
        cfg: strengths (flip probabilities, blur, crosstalk, intensity range, noise);
            affine and channel drop are not used here. Blur and crosstalk draw random
            numbers only when enabled (``p_blur > 0``, ``crosstalk > 0``), so runs without
            them repeat the streams of detectors trained before they existed.
        gen: torch generator.

    Returns:
        ``(images, boxes)`` transformed consistently.
    """
    _check_batch(x)
    if len(boxes) != x.shape[0]:
        raise ValueError(f"{len(boxes)} box sets for {x.shape[0]} patches")
    n, p = x.shape[0], x.shape[-1]
    hf = _bernoulli(n, cfg.p_hflip, gen, x.device).tolist()
    vf = _bernoulli(n, cfg.p_vflip, gen, x.device).tolist()
    rot = torch.randint(0, 4, (n,), generator=gen, device=x.device).tolist()
    imgs, out_boxes = [], []
    for i in range(n):
        imgs.append(_geometric_image(x[i].float(), hf[i], vf[i], rot[i]))
        out_boxes.append(transform_boxes(boxes[i], p, hf[i], vf[i], rot[i]))
    out = torch.stack(imgs)
    if cfg.p_blur > 0:
        out = random_blur(out, cfg, gen)
    if cfg.crosstalk > 0:
        out = random_crosstalk(out, cfg, gen)
    return photometric(out, cfg, gen, drop_channels=False), out_boxes


def make_generator(seed: int) -> torch.Generator:
    """A CPU torch generator seeded with ``seed``."""
    g = torch.Generator()
    g.manual_seed(int(seed) % (2**63))
    return g


__all__ = [
    "AugmentConfig",
    "augment_batch",
    "remove_mycn_signals",
    "augment_detection",
    "make_generator",
    "photometric",
    "random_affine",
    "random_blur",
    "random_crosstalk",
    "random_flips",
    "transform_boxes",
]
