"""The one renderer of sam-explain's pictures over an image: numpy arrays in, RGB uint8 arrays out.

Every overlay the package draws (the matplotlib figures, the ``attention`` command and the live
explorer) is composited here and nowhere else, so that they all look and read alike:

  the image, dimmed to gray      colour then means attention, not the scene's own blues and greens
  a heat layer, inferno          perceptually uniform: black and purple little, orange, yellow most
  opacity rising with the value  little attention leaves the gray image visible, a lot covers it
  a robust colour limit          a high percentile of the map (99th by default): one cell at 0.99
                                 cannot flatten the rest; the cells above it take the top colour
  outlines                       the fewest cells that hold a given share of the attention mass

  map_resampler   an h x w map over SAM's padded square input -> the pixels of a picture of the
                  original image (SAM's resize-and-pad geometry, as ``utils.transforms.grid_to_image``)
  image_resampler the original image -> a picture of another size
  overlay         dimmed gray image + heat -> H x W x 3 uint8
  colourize       a bare map -> H x W x 3 uint8 (no image)
  mask_picture    dimmed gray image + a boolean mask -> H x W x 3 uint8

No matplotlib here and no torch: the colour map is matplotlib's inferno sampled once at 256 steps
and stored below as hex (a test checks it against matplotlib), and callers pass numpy arrays.
Speed: the composite is one table look-up per pixel (a 256 gray levels x 256 heat levels table
of blended colours, built once per style), so a 512 x 512 overlay takes a few milliseconds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

# matplotlib's "inferno", 256 steps, R G B bytes as hex (sampled once, when this file was written)
_INFERNO_HEX = (
    "00000401000501010601010802010a02020c02020e03021004031204031405041706041907051b08051d09061f0a0722"
    "0b07240c08260d08290e092b10092d110a30120a32140b34150b37160b39180c3c190c3e1b0c411c0c431e0c451f0c48"
    "210c4a230c4c240c4f260c51280b53290b552b0b572d0b592f0a5b310a5c320a5e340a5f3609613809623909633b0964"
    "3d09653e0966400a67420a68440a68450a69470b6a490b6a4a0c6b4c0c6b4d0d6c4f0d6c510e6c520e6d540f6d550f6d"
    "57106e59106e5a116e5c126e5d126e5f136e61136e62146e64156e65156e67166e69166e6a176e6c186e6d186e6f196e"
    "71196e721a6e741a6e751b6e771c6d781c6d7a1d6d7c1d6d7d1e6d7f1e6c801f6c82206c84206b85216b87216b88226a"
    "8a226a8c23698d23698f24699025689225689326679526679727669827669a28659b29649d29649f2a63a02a63a22b62"
    "a32c61a52c60a62d60a82e5fa92e5eab2f5ead305dae305cb0315bb1325ab3325ab43359b63458b73557b93556ba3655"
    "bc3754bd3853bf3952c03a51c13a50c33b4fc43c4ec63d4dc73e4cc83f4bca404acb4149cc4248ce4347cf4446d04545"
    "d24644d34743d44842d54a41d74b3fd84c3ed94d3dda4e3cdb503bdd513ade5238df5337e05536e15635e25734e35933"
    "e45a31e55c30e65d2fe75e2ee8602de9612bea632aeb6429eb6628ec6726ed6925ee6a24ef6c23ef6e21f06f20f1711f"
    "f1731df2741cf3761bf37819f47918f57b17f57d15f67e14f68013f78212f78410f8850ff8870ef8890cf98b0bf98c0a"
    "f98e09fa9008fa9207fa9407fb9606fb9706fb9906fb9b06fb9d07fc9f07fca108fca309fca50afca60cfca80dfcaa0f"
    "fcac11fcae12fcb014fcb216fcb418fbb61afbb81dfbba1ffbbc21fbbe23fac026fac228fac42afac62df9c72ff9c932"
    "f9cb35f8cd37f8cf3af7d13df7d340f6d543f6d746f5d949f5db4cf4dd4ff4df53f4e156f3e35af3e55df2e661f2e865"
    "f2ea69f1ec6df1ed71f1ef75f1f179f2f27df2f482f3f586f3f68af4f88ef5f992f6fa96f8fb9af9fc9dfafda1fcffa4")
INFERNO = np.frombuffer(bytes.fromhex("".join(_INFERNO_HEX)), dtype=np.uint8).reshape(256, 3)  # 256 x 3
INFERNO.setflags(write=False)

DEFAULT_PERCENTILE = 99.0  # the colour limit: this percentile of the map's cells
OUTLINE_COLOUR = (0, 255, 255)  # cyan: not in inferno, visible over gray and over yellow
MASK_COLOUR = (30, 144, 255)  # a blue that is not in inferno either
FOREGROUND = (40, 220, 60)
BACKGROUND = (235, 40, 40)
BOX_COLOUR = (255, 160, 0)


@dataclass(frozen=True)
class HeatStyle:
    """How values become colours over the dimmed image.

    colours: 256 x 3 uint8 as bytes (the colour map; ``INFERNO`` by default)
    opacity: the heat layer's opacity at the colour limit (0..1)
    ramp:    opacity at a fraction t of the limit is ``opacity * t ** ramp`` (1: linear; < 1 makes
             faint attention show sooner)
    dim:     the gray image's brightness, ``floor + dim * luminance``
    floor:   the gray image's darkest level
    edges:   how much lighter the image's colour edges are drawn in the gray (objects whose colours
             differ but whose luminance does not, a pink square on a blue ground, would vanish)
    """

    colours: bytes = INFERNO.tobytes()
    opacity: float = 0.9
    ramp: float = 0.75
    dim: float = 0.5
    floor: float = 0.12
    edges: float = 0.3

    def __post_init__(self) -> None:
        if len(self.colours) != 256 * 3:
            raise ValueError(f"HeatStyle.colours must be 256 x 3 bytes, got {len(self.colours)} bytes")
        for name in ("opacity", "dim", "floor", "edges"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"HeatStyle.{name} must be in 0..1, got {value!r}")
        if not self.ramp > 0.0:
            raise ValueError(f"HeatStyle.ramp must be > 0, got {self.ramp!r}")
        if self.floor + self.dim > 1.0:
            raise ValueError(f"HeatStyle.floor + dim must be at most 1, got {self.floor} + {self.dim}")

    @property
    def lut(self) -> np.ndarray:
        """The colour map, 256 x 3 uint8."""
        return np.frombuffer(self.colours, dtype=np.uint8).reshape(256, 3)  # 256 x 3


DEFAULT_STYLE = HeatStyle()


def style_with(colours: Optional[np.ndarray] = None, opacity: Optional[float] = None) -> HeatStyle:
    """The default style with another colour map (256 x 3 uint8 or floats in 0..1) or opacity."""
    kwargs = {}
    if colours is not None:
        lut = np.asarray(colours)
        if lut.shape != (256, 3):
            raise ValueError(f"a colour map must be 256 x 3, got {' x '.join(map(str, lut.shape))}")
        if lut.dtype != np.uint8:
            lut = np.clip(np.round(lut.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        kwargs["colours"] = lut.tobytes()
    if opacity is not None:
        kwargs["opacity"] = float(opacity)
    return HeatStyle(**kwargs)


# --- geometry: resampling as matrices ------------------------------------------------------------

def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """n_out x n_in float32: linear interpolation along one axis with half-pixel centres, the
    arithmetic of ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``
    (source index ``(i + 0.5) * n_in / n_out - 0.5``, clamped at 0 and at the last pixel)."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got n_in = {n_in}, n_out = {n_out}")
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)  # n_out
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)  # n_out
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    m = np.zeros((n_out, n_in), dtype=np.float64)  # n_out x n_in
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, i1), w1)
    return m.astype(np.float32)


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """n_out x n_in float32: each output pixel the mean of the input pixels it covers (fractions
    at its edges). For shrinking an image without aliasing."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got n_in = {n_in}, n_out = {n_out}")
    s = n_in / n_out
    lo = np.arange(n_out, dtype=np.float64)[:, None] * s  # n_out x 1: where each output pixel starts
    j = np.arange(n_in, dtype=np.float64)[None, :]  # 1 x n_in
    overlap = np.clip(np.minimum(j + 1.0, lo + s) - np.maximum(j, lo), 0.0, None)  # n_out x n_in
    return (overlap / s).astype(np.float32)


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Bilinear when enlarging (or keeping) a side, area when shrinking it: n_out x n_in."""
    return bilinear_matrix(n_in, n_out) if n_out >= n_in else area_matrix(n_in, n_out)


def resized_shape(original_size: Tuple[int, int], long_side: int) -> Tuple[int, int]:
    """(Hr, Wr): the original (H0, W0) resized so that its longer side is ``long_side``, each side
    rounded half up (``ResizeLongestSide.get_preprocess_shape``; a test checks they agree)."""
    h0, w0 = (int(v) for v in original_size)
    if h0 < 1 or w0 < 1:
        raise ValueError(f"an image size must be positive, got h0 x w0 = {h0} x {w0}")
    scale = long_side * 1.0 / max(h0, w0)
    return int(h0 * scale + 0.5), int(w0 * scale + 0.5)


def fit_long_side(original_size: Tuple[int, int], long_side: int) -> Tuple[int, int]:
    """(h, w) of a picture of the original (H0, W0) with its longer side ``long_side``."""
    return resized_shape(original_size, long_side)


@dataclass(frozen=True)
class Band:
    """The non-zero band of a resampling matrix n_out x n_in: output i is the sum over k < K of
    ``weights[i, k] * input[start[i] + k]`` (bilinear and area matrices have a few contiguous
    non-zeros per row, K of them at most)."""

    start: np.ndarray  # n_out, int64
    weights: np.ndarray  # n_out x K, float32

    @staticmethod
    def of(m: np.ndarray) -> "Band":
        n_out, n_in = m.shape
        nz = m != 0  # n_out x n_in
        empty = ~nz.any(axis=1)  # n_out: rows of zeros (none in SAM's geometry)
        first = np.where(empty, 0, nz.argmax(axis=1))  # n_out
        last = np.where(empty, 0, n_in - 1 - nz[:, ::-1].argmax(axis=1))  # n_out
        K = int((last - first).max()) + 1
        start = np.minimum(first, n_in - K)  # n_out: the band stays inside the input
        index = start[:, None] + np.arange(K)  # n_out x K
        return Band(start, np.take_along_axis(m, index, axis=1).astype(np.float32))  # weights n_out x K

    def along(self, a: np.ndarray, axis: int) -> np.ndarray:
        """Apply along ``axis`` of ``a`` (n_in there -> n_out): K gathers and multiply-adds, no BLAS
        (numpy's threaded BLAS is slow on small products on a busy machine)."""
        a = np.moveaxis(a, axis, -1)  # ... x n_in
        out = a[..., self.start] * self.weights[:, 0]  # ... x n_out
        for k in range(1, self.weights.shape[1]):
            out += a[..., self.start + k] * self.weights[:, k]
        return np.moveaxis(out, -1, axis)  # n_out on ``axis``


@dataclass(frozen=True)
class Resampler:
    """A separable linear map from h x w maps to out_h x out_w pictures: ``rows`` out_h x h and
    ``cols`` out_w x w, so that a map M becomes ``rows @ M @ cols.T`` (computed on their bands)."""

    rows: np.ndarray  # out_h x h
    cols: np.ndarray  # out_w x w

    def __post_init__(self) -> None:
        object.__setattr__(self, "_row_band", Band.of(self.rows))
        object.__setattr__(self, "_col_band", Band.of(self.cols))

    @property
    def out_size(self) -> Tuple[int, int]:
        return self.rows.shape[0], self.cols.shape[0]

    @property
    def in_size(self) -> Tuple[int, int]:
        return self.rows.shape[1], self.cols.shape[1]

    def __call__(self, maps: np.ndarray) -> np.ndarray:
        """... x h x w -> ... x out_h x out_w, float32."""
        maps = np.asarray(maps, dtype=np.float32)
        if maps.shape[-2:] != self.in_size:
            raise ValueError(f"the resampler takes ... x {self.in_size[0]} x {self.in_size[1]} maps, "
                             f"got {' x '.join(map(str, maps.shape))}")
        tall = self._row_band.along(maps, -2)  # ... x out_h x w
        return self._col_band.along(tall, -1)  # ... x out_h x out_w

    def image(self, image: np.ndarray) -> np.ndarray:
        """h x w x c -> out_h x out_w x c, float32."""
        a = np.moveaxis(np.asarray(image, dtype=np.float32), -1, 0)  # c x h x w
        return np.moveaxis(self(a), 0, -1)  # out_h x out_w x c


def _frozen(m: np.ndarray) -> np.ndarray:
    m.setflags(write=False)
    return m


@functools.lru_cache(maxsize=64)
def map_resampler(map_size: Tuple[int, int], original_size: Tuple[int, int], input_size: int,
                  out_size: Optional[Tuple[int, int]] = None) -> Resampler:
    """From an h x w map over SAM's padded input_size x input_size square (the 64 x 64 grid, or the
    4H x 4W low-res masks) to the out_h x out_w pixels of a picture of the (H0, W0) original.

    SAM's path (``Sam.postprocess_masks``): bilinear to input_size x input_size, crop the resized
    image's Hr x Wr (the rest is padding), then bilinear to the picture's size (``original_size``
    when ``out_size`` is None: then it equals ``grid_to_image``)."""
    h, w = (int(v) for v in map_size)
    hr, wr = resized_shape(original_size, input_size)
    ho, wo = (int(v) for v in (out_size or original_size))
    rows = bilinear_matrix(hr, ho) @ bilinear_matrix(h, input_size)[:hr]  # ho x h
    cols = bilinear_matrix(wr, wo) @ bilinear_matrix(w, input_size)[:wr]  # wo x w
    return Resampler(_frozen(rows), _frozen(cols))


@functools.lru_cache(maxsize=16)
def image_resampler(original_size: Tuple[int, int], out_size: Tuple[int, int]) -> Resampler:
    """From the (H0, W0) original to an out_h x out_w picture (bilinear up, area down)."""
    (h0, w0), (ho, wo) = original_size, out_size
    return Resampler(_frozen(resize_matrix(int(h0), int(ho))), _frozen(resize_matrix(int(w0), int(wo))))


def cell_of_pixels(original_size: Tuple[int, int], input_size: int, grid: Tuple[int, int],
                   out_size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """The grid cell under each pixel of an out_h x out_w picture of the original: (row index
    out_h, column index out_w) into the H x W grid (pixel centres, SAM's geometry)."""
    hr, wr = resized_shape(original_size, input_size)
    ho, wo = out_size
    y = (np.arange(ho) + 0.5) * (hr / ho)  # out_h: input-frame pixels
    x = (np.arange(wo) + 0.5) * (wr / wo)  # out_w
    rows = np.minimum((y * grid[0] / input_size).astype(np.int64), grid[0] - 1)  # out_h
    cols = np.minimum((x * grid[1] / input_size).astype(np.int64), grid[1] - 1)  # out_w
    return rows, cols


# --- images ----------------------------------------------------------------------------------------

def as_rgb_float(image: np.ndarray) -> np.ndarray:
    """H0 x W0 x 3 (or x 4, or H0 x W0) uint8 / float image -> H0 x W0 x 3 float32 in 0..1."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)  # H0 x W0 x 3
    if a.ndim != 3 or a.shape[-1] not in (3, 4) or min(a.shape[:2]) < 1:
        raise ValueError(f"an image must be h0 x w0 x 3 (RGB), got shape {' x '.join(map(str, a.shape))}")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"an image must be uint8 or real numbers, got {a.dtype}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError("an image must be finite (it holds NaN or infinity)")
    return np.clip(a / 255.0 if a.max() > 1.0 else a, 0.0, 1.0)


def to_uint8(a: np.ndarray) -> np.ndarray:
    """Floats in 0..1 -> uint8 0..255 (rounded)."""
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def picture_of(image: np.ndarray, out_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """The image as an out_h x out_w x 3 uint8 picture (the original size by default)."""
    rgb = as_rgb_float(image)  # H0 x W0 x 3
    if out_size is None or tuple(out_size) == rgb.shape[:2]:
        return to_uint8(rgb)
    return to_uint8(image_resampler(rgb.shape[:2], tuple(out_size)).image(rgb))  # out_h x out_w x 3


def colour_edges(rgb: np.ndarray) -> np.ndarray:
    """h x w x 3 floats in 0..1 -> h x w edge strength in 0..1: the largest colour difference to the
    right and below neighbours (any channel), so that iso-luminant boundaries count too."""
    edge = np.zeros(rgb.shape[:2], dtype=np.float32)  # h x w
    dx = np.abs(np.diff(rgb, axis=1)).max(-1)  # h x (w - 1)
    dy = np.abs(np.diff(rgb, axis=0)).max(-1)  # (h - 1) x w
    edge[:, :-1] = np.maximum(edge[:, :-1], dx)
    edge[:-1] = np.maximum(edge[:-1], dy)
    return np.clip((edge - 0.08) / 0.25, 0.0, 1.0)  # weak texture and noise below 0.08 left out


def dimmed_gray(picture: np.ndarray, style: HeatStyle = DEFAULT_STYLE) -> np.ndarray:
    """An h x w x 3 picture (uint8 or float in 0..1) -> h x w uint8 gray levels, dimmed:
    ``floor + dim * luminance`` (Rec. 601 weights), the colour edges drawn ``edges`` lighter."""
    rgb = np.asarray(picture)
    rgb = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # h x w
    return to_uint8(style.floor + style.dim * lum + style.edges * colour_edges(rgb))


def gray_rgb(gray: np.ndarray) -> np.ndarray:
    """h x w uint8 gray levels -> h x w x 3 uint8."""
    return np.repeat(gray[..., None], 3, axis=-1)  # h x w x 3


# --- colour ----------------------------------------------------------------------------------------

def robust_limit(values: np.ndarray, percentile: float = DEFAULT_PERCENTILE) -> float:
    """The colour limit of a map: its ``percentile``-th percentile (of the cells given; 100 is the
    maximum), or its maximum when that is 0, or 1 for an all-zero map."""
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("robust_limit: no values")
    if not np.isfinite(v).all():
        raise ValueError("robust_limit: the map holds NaN or infinity")
    top = float(np.percentile(v, percentile))
    if top <= 0.0:
        top = float(v.max())
    return top if top > 0.0 else 1.0


def heat_index(values: np.ndarray, vmax: float, gamma: float = 1.0) -> np.ndarray:
    """Values -> uint8 colour levels 0..255: ``(clip(value / vmax, 0, 1) ** gamma) * 255``."""
    if not vmax > 0.0:
        raise ValueError(f"the colour limit vmax must be > 0, got {vmax!r}")
    if not gamma > 0.0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}")
    t = np.asarray(values, dtype=np.float32) * np.float32(1.0 / vmax)
    np.clip(t, 0.0, 1.0, out=t)
    if gamma != 1.0:
        t **= np.float32(gamma)
    t *= 255.0
    t += 0.5
    return t.astype(np.uint8)


def opacity_table(style: HeatStyle = DEFAULT_STYLE) -> np.ndarray:
    """256 float32: the heat layer's opacity at each colour level."""
    t = np.arange(256, dtype=np.float64) / 255.0  # 256
    return (style.opacity * t ** style.ramp).astype(np.float32)


@functools.lru_cache(maxsize=8)
def blend_table(style: HeatStyle = DEFAULT_STYLE) -> np.ndarray:
    """65536 x 3 uint8: row ``gray * 256 + level`` is the heat colour of that level laid with its
    opacity over that gray level. Built once per style."""
    alpha = opacity_table(style)[None, :, None]  # 1 x 256 x 1
    heat = style.lut.astype(np.float32)[None] / 255.0  # 1 x 256 x 3
    gray = (np.arange(256, dtype=np.float32) / 255.0)[:, None, None]  # 256 x 1 x 1
    table = to_uint8(gray * (1.0 - alpha) + heat * alpha)  # 256 x 256 x 3
    return _frozen(table.reshape(256 * 256, 3))  # 65536 x 3


def legend_colours(style: HeatStyle = DEFAULT_STYLE, gray: float = 0.35) -> np.ndarray:
    """256 x 3 uint8: what each colour level looks like over a mid gray (for a colour bar that
    shows the heat as it is drawn, opacity included)."""
    g = int(round(gray * 255))
    return blend_table(style)[g * 256: (g + 1) * 256].copy()  # 256 x 3


def colourize(values: np.ndarray, vmax: float, style: HeatStyle = DEFAULT_STYLE, gamma: float = 1.0) -> np.ndarray:
    """A bare map (no image) -> ... x 3 uint8 through the colour map, fully opaque."""
    return style.lut[heat_index(values, vmax, gamma)]  # ... x 3


def overlay(gray: np.ndarray, heat: np.ndarray, vmax: float, *, style: HeatStyle = DEFAULT_STYLE,
            gamma: float = 1.0, outline: Optional[np.ndarray] = None,
            outline_colour: Sequence[int] = OUTLINE_COLOUR) -> np.ndarray:
    """The heat over the dimmed gray picture.

    gray:    h x w uint8 (``dimmed_gray``)
    heat:    h x w values (the map resampled to the picture), coloured from 0 to ``vmax``
    outline: h x w bool, pixels painted in ``outline_colour`` (``outline_pixels``)
    Returns h x w x 3 uint8.
    """
    if gray.shape != heat.shape:
        raise ValueError(f"gray and heat must be the same h x w, got {gray.shape} and {heat.shape}")
    key = gray.astype(np.intp) << 8  # h x w: the gray level's block in the table
    key |= heat_index(heat, vmax, gamma)
    out = np.take(blend_table(style), key, axis=0)  # h x w x 3
    if outline is not None:
        out[outline] = outline_colour
    return out


# --- outlines, masks and markers -----------------------------------------------------------------

def top_mass_cells(grid_map: np.ndarray, share: float) -> np.ndarray:
    """The fewest cells of an H x W map (of non-negative weights) that hold ``share`` (0..1] of
    its sum, most-attended first: H x W bool."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"the attention share to outline must be in (0, 1], got {share!r}")
    m = np.asarray(grid_map, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"top_mass_cells takes an H x W map, got shape {' x '.join(map(str, m.shape))}")
    flat = np.clip(m.ravel(), 0.0, None)  # HW
    order = np.argsort(flat, kind="stable")[::-1]  # HW, largest first
    mass = np.cumsum(flat[order])  # HW
    keep = np.zeros(flat.shape, dtype=bool)
    if mass[-1] <= 0.0:
        return keep.reshape(m.shape)
    k = min(int(np.searchsorted(mass, share * mass[-1] * (1.0 - 1e-9))) + 1, flat.size)
    keep[order[:k]] = True
    return keep.reshape(m.shape)  # H x W


def edge_pixels(region: np.ndarray, width: int = 1) -> np.ndarray:
    """The inner border, ``width`` pixels wide, of an h x w bool region (the picture's own border
    counts as outside): h x w bool."""
    inner = region.copy()
    for _ in range(max(1, int(width))):
        e = inner.copy()
        e[1:] &= inner[:-1]
        e[:-1] &= inner[1:]
        e[:, 1:] &= inner[:, :-1]
        e[:, :-1] &= inner[:, 1:]
        e[0], e[-1], e[:, 0], e[:, -1] = False, False, False, False  # outside the picture is outside
        inner = e
    return region & ~inner


def outline_pixels(cells: np.ndarray, resampler: Resampler, width: int = 2) -> np.ndarray:
    """The outline of a set of grid cells (H x W bool) on the picture (``resampler``'s out_h x
    out_w): the cells are resampled like the map and cut at one half, then their border taken."""
    region = resampler(cells.astype(np.float32)) >= 0.5  # out_h x out_w
    return edge_pixels(region, width)


def mask_picture(gray: np.ndarray, mask: np.ndarray, colour: Sequence[int] = MASK_COLOUR,
                 opacity: float = 0.6, edge: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """A mask over the dimmed gray picture: h x w uint8 and h x w bool -> h x w x 3 uint8, the mask
    filled with ``colour`` at ``opacity`` and edged with ``edge``."""
    out = gray_rgb(gray)  # h x w x 3
    if mask.any():
        fill = np.asarray(colour, dtype=np.float32)
        out[mask] = to_uint8((out[mask].astype(np.float32) * (1.0 - opacity) + fill * opacity) / 255.0)
        out[edge_pixels(mask, 1)] = edge
    return out


def draw_disc(picture: np.ndarray, x: float, y: float, radius: float, fill: Sequence[int],
              ring: Sequence[int] = (255, 255, 255), ring_width: float = 2.0) -> None:
    """A filled disc with a ring, centred at pixel (x, y) of an h x w x 3 picture (in place)."""
    h, w = picture.shape[:2]
    r_out = radius + ring_width
    y0, y1 = max(0, int(y - r_out - 1)), min(h, int(y + r_out + 2))
    x0, x1 = max(0, int(x - r_out - 1)), min(w, int(x + r_out + 2))
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]  # the window's pixel rows and columns
    d = np.hypot(xx + 0.5 - x, yy + 0.5 - y)  # distance of each pixel centre
    window = picture[y0:y1, x0:x1]
    window[d <= r_out] = ring
    window[d <= radius] = fill


def draw_rectangle(picture: np.ndarray, x0: float, y0: float, x1: float, y1: float,
                   colour: Sequence[int] = BOX_COLOUR, width: int = 2) -> None:
    """A rectangle's border between pixel corners (x0, y0) and (x1, y1) (in place)."""
    h, w = picture.shape[:2]
    xa, xb = sorted((int(round(x0)), int(round(x1))))
    ya, yb = sorted((int(round(y0)), int(round(y1))))
    xa, xb = max(0, min(w - 1, xa)), max(0, min(w - 1, xb))
    ya, yb = max(0, min(h - 1, ya)), max(0, min(h - 1, yb))
    for k in range(width):
        for yk in (min(h - 1, ya + k), max(0, yb - k)):
            picture[yk, xa:xb + 1] = colour
        for xk in (min(w - 1, xa + k), max(0, xb - k)):
            picture[ya:yb + 1, xk] = colour


def enlarge(picture: np.ndarray, factor_h: int, factor_w: Optional[int] = None) -> np.ndarray:
    """Nearest-neighbour enlargement: h x w x c -> (h * factor_h) x (w * factor_w) x c."""
    factor_w = factor_h if factor_w is None else factor_w
    return np.repeat(np.repeat(picture, factor_h, axis=0), factor_w, axis=1)  # h fh x w fw x c


# --- all of it at once -----------------------------------------------------------------------------

def attention_over_image(grid_map: np.ndarray, image: np.ndarray, *, input_size: int, vmax: Optional[float] = None,
                         percentile: float = DEFAULT_PERCENTILE, out_size: Optional[Tuple[int, int]] = None,
                         outline: Optional[float] = None, style: HeatStyle = DEFAULT_STYLE,
                         gamma: float = 1.0) -> np.ndarray:
    """An H x W attention map over the (H0 x W0 x 3) image it was computed for, as SAM's geometry
    places it: out_h x out_w x 3 uint8 (the original size by default).

    vmax: the colour limit (default: the map's ``percentile``-th percentile); outline: a share of
    the attention mass (e.g. 0.5) whose fewest cells are outlined, or None."""
    grid_map = np.asarray(grid_map, dtype=np.float32)
    if grid_map.ndim != 2:
        raise ValueError(f"an attention map must be H x W, got shape {' x '.join(map(str, grid_map.shape))}")
    rgb = as_rgb_float(image)  # H0 x W0 x 3
    size = tuple(out_size) if out_size is not None else rgb.shape[:2]
    top = robust_limit(grid_map, percentile) if vmax is None else float(vmax)
    resample = map_resampler(grid_map.shape, rgb.shape[:2], int(input_size), size)
    gray = dimmed_gray(picture_of(rgb, size), style)  # out_h x out_w
    edges = None
    if outline is not None:
        edges = outline_pixels(top_mass_cells(grid_map, outline), resample, width=max(1, round(max(size) / 256)))
    return overlay(gray, resample(grid_map), top, style=style, gamma=gamma, outline=edges)
