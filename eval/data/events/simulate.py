"""Simulated event camera: N-MNIST-style saccades over a still image.

The sensor moves along a closed triangle of three saccades (N-MNIST: Orchard et al. 2015), so the image
slides over the pixel array. Each pixel fires an ON (OFF) event every time its log intensity rises (falls)
by its contrast threshold since its last event, with the crossing time interpolated inside the simulation
step (as in ESIM / v2e). Output: tonic's structured event array, t in µs, sorted by time. The only
randomness is the per-pixel threshold mismatch, drawn from ``np.random.default_rng(seed)``: the same image
and seed give the same events.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.errors import InvalidArgumentError

from .datasets import EVENT_DTYPE

# N-MNIST moves the sensor by (3.5, 7), (3.5, -7), (-7, 0) px; scaled here to fit a 28x28 image in 34x34.
NMNIST_PATH = ((0.0, 0.0), (3.0, 6.0), (6.0, 0.0), (0.0, 0.0))


@dataclass(frozen=True)
class SaccadeSensor:
    """Event camera looking at an image that moves along ``path``.

    Args:
        sensor_size: (W, H) pixels.
        path: image offsets (x, y) in pixels at the saccade ends; first == last (a closed path).
        saccade_us: duration of each saccade in µs.
        threshold: contrast threshold C on log(intensity + eps), intensity in [0, 1].
        threshold_sigma: per-pixel threshold mismatch (std of C across pixels).
        eps: keeps log() finite on black pixels.
        step_us: simulation step; crossing times are interpolated inside it.
    """

    sensor_size: tuple[int, int] = (34, 34)
    path: tuple[tuple[float, float], ...] = NMNIST_PATH
    saccade_us: int = 100_000
    threshold: float = 0.5
    threshold_sigma: float = 0.05
    eps: float = 0.1
    step_us: int = 1_000

    def __post_init__(self):
        if len(self.path) < 2 or tuple(self.path[0]) != tuple(self.path[-1]):
            raise InvalidArgumentError(f"path must be closed (first point == last point), got {self.path}")
        if min(min(p) for p in self.path) < 0:
            raise InvalidArgumentError("path offsets must be non-negative")
        if not np.isfinite([self.threshold, self.eps, self.threshold_sigma, self.saccade_us, self.step_us]).all():
            raise InvalidArgumentError(
                f"threshold, threshold_sigma, eps, saccade_us and step_us must be finite, got "
                f"{self.threshold}, {self.threshold_sigma}, {self.eps}, {self.saccade_us}, {self.step_us}")
        if self.saccade_us <= 0 or self.step_us <= 0:
            raise InvalidArgumentError(
                f"saccade_us and step_us must be positive, got {self.saccade_us}, {self.step_us}")
        if self.saccade_us % self.step_us:
            raise InvalidArgumentError(f"saccade_us ({self.saccade_us}) must be a multiple of step_us ({self.step_us})")
        if self.threshold <= 0 or self.eps <= 0 or self.threshold_sigma < 0:
            raise InvalidArgumentError("threshold and eps must be positive, threshold_sigma non-negative")

    @property
    def duration_us(self) -> int:
        """Microseconds the sensor's path takes (one saccade per segment)."""
        return (len(self.path) - 1) * self.saccade_us

    def offset(self, t_us: float) -> tuple[float, float]:
        """Image offset (x, y) at time ``t_us``."""
        i = min(int(t_us // self.saccade_us), len(self.path) - 2)
        s = (t_us - i * self.saccade_us) / self.saccade_us
        (x0, y0), (x1, y1) = self.path[i], self.path[i + 1]
        return x0 + (x1 - x0) * s, y0 + (y1 - y0) * s

    def _render(self, image: np.ndarray, ox: float, oy: float) -> np.ndarray:
        """The image at sub-pixel offset (ox, oy) on the sensor (bilinear), black elsewhere."""
        w, h = self.sensor_size
        ix, iy = int(np.floor(ox)), int(np.floor(oy))
        fx, fy = ox - ix, oy - iy
        canvas = np.zeros((h + 1, w + 1))
        ih, iw = image.shape
        for dy, dx, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy),
                               (1, 1, fx * fy)):
            if weight:
                canvas[iy + dy:iy + dy + ih, ix + dx:ix + dx + iw] += weight * image
        return canvas[:h, :w]

    def __call__(self, image, seed: int | np.random.SeedSequence | list = 0) -> np.ndarray:
        """Grey image ``[H, W]`` (uint8 0-255 or float 0-1) -> events (tonic structured array)."""
        image = np.asarray(image)
        if image.ndim != 2:
            raise InvalidArgumentError(f"expected a grey image [H, W], got shape {image.shape}")
        image = image / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)
        if image.size == 0 or not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise InvalidArgumentError("image intensities must be finite and within [0, 1] (or uint8 0-255)")
        w, h = self.sensor_size
        max_x, max_y = max(p[0] for p in self.path), max(p[1] for p in self.path)
        if image.shape[1] + int(np.ceil(max_x)) > w or image.shape[0] + int(np.ceil(max_y)) > h:
            raise InvalidArgumentError(
                f"a {image.shape[1]}x{image.shape[0]} image moved by up to ({max_x}, {max_y}) px "
                f"does not fit a {w}x{h} sensor")
        rng = np.random.default_rng(seed)
        c = np.clip(rng.normal(self.threshold, self.threshold_sigma, (h, w)), self.threshold / 2, None)

        log0 = np.log(self._render(image, *self.offset(0)) + self.eps)
        level = np.zeros((h, w), dtype=np.int64)  # each pixel's reference is log0 + c * level
        prev = log0
        xs, ys, ts, ps = [], [], [], []
        for k in range(1, self.duration_us // self.step_us + 1):
            now = np.log(self._render(image, *self.offset(k * self.step_us)) + self.eps)
            diff = now - (log0 + c * level)
            n = np.floor(np.abs(diff) / c + 1e-9).astype(np.int64)  # tolerance: a closed path returns exactly
            yy, xx = np.nonzero(n)
            if len(yy):
                sign = np.sign(diff[yy, xx]).astype(np.int64)
                for j in range(1, int(n[yy, xx].max()) + 1):
                    sel = n[yy, xx] >= j
                    py, px, sj = yy[sel], xx[sel], sign[sel]
                    crossing = log0[py, px] + c[py, px] * (level[py, px] + sj * j)
                    frac = np.clip((crossing - prev[py, px]) / (now[py, px] - prev[py, px]), 0.0, 1.0)
                    xs.append(px), ys.append(py), ps.append(sj > 0)
                    ts.append(np.rint((k - 1 + frac) * self.step_us).astype(np.int64))
                level[yy, xx] += sign * n[yy, xx]
            prev = now
        events = np.zeros(sum(len(t) for t in ts), dtype=EVENT_DTYPE)
        if len(events):
            events["x"], events["y"] = np.concatenate(xs), np.concatenate(ys)
            events["t"], events["p"] = np.concatenate(ts), np.concatenate(ps)
            events = events[np.lexsort((events["x"], events["y"], events["t"]))]
        return events


def events_from_images(images, sensor: SaccadeSensor, seed: int = 0, stream: int = 0) -> list[np.ndarray]:
    """One recording per image; image ``i`` uses the seed ``(seed, stream, i)``, so a recording does not
    depend on which other images are converted (``stream`` tells the train and test splits apart)."""
    return [sensor(image, seed=[seed, stream, i]) for i, image in enumerate(images)]
