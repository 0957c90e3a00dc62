"""The live explorer without its widget: a model, an image and its embedding (computed once), the
prompts clicked so far, the last run with every attention map, and the picture of it.

    session = ExplorerSession()                  # the toy model on toy scene 0, one click already made
    picture = session.click(120, 80)             # H x W x 3 uint8: attention over the image + 3 masks
    picture = session.select(kind="image_to_token", layer=1, head=3, token="point0")
    session.undo(); session.reset()

Each prompt change runs the prompt encoder and the decoder once, inside ``record_attention`` (every
map of every layer and head is kept), then renders; a control change only renders. Rendering is
``sam_explain.render`` (numpy, no matplotlib): the picture is the main panel (the chosen map over
the dimmed image, or the T x T matrix for token self-attention) with the three masks in a column
beside it, at ``PANEL`` pixels on the main panel's long side times the display's pixel ratio.
The widget (``widget.LiveExplorer``) shows these pictures and sends clicks and control changes here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .. import render
from ..attention import AttentionRecord, capture_attention
from ..attention.capture import KIND_TITLES
from ..prompts import Prompts, run_decoder
from ..shapes.check import ShapeError
from ..utils.transforms import to_input_frame

KINDS = ("token_to_image", "image_to_token", "token_self")
PANEL = 512  # the main panel's long side in CSS pixels; the picture has this times the pixel ratio
GAP = 8  # CSS pixels between the main panel and the masks, and between the masks
MATRIX_LEFT, MATRIX_BOTTOM = 100, 90  # CSS pixels left beside the T x T matrix for the token names
MAX_RATIO = 3.0
FRAME_COLOUR = (0, 255, 255)  # the mask whose token is shown
Layer = Union[int, str]
Head = Union[int, str]


@dataclass
class Backend:
    """What a session runs: the prompt encoder and mask decoder, the image (H0 x W0 x 3 uint8) and its
    embedding (1 x C x H x W, computed once), and the side of the padded square input the prompt
    encoder's coordinates live in (1024 for SAM, 256 for the toy)."""

    prompt_encoder: nn.Module
    mask_decoder: nn.Module
    image: np.ndarray
    image_embeddings: torch.Tensor
    input_size: int
    label: str
    first_click: Optional[Tuple[float, float]] = None


def check_rgb_image(image: Any, where: str, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """An H0 x W0 x 3 uint8 numpy image (of ``size`` if given), else ShapeError naming what was given."""
    if not isinstance(image, np.ndarray):
        raise ShapeError(f"{where}: image must be a numpy array H0 x W0 x 3 uint8, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ShapeError(f"{where}: image must be H0 x W0 x 3 (RGB), got {' x '.join(map(str, image.shape))}")
    if image.dtype != np.uint8:
        raise ShapeError(f"{where}: image must be uint8 (0..255), got {image.dtype}")
    if size is not None and tuple(image.shape[:2]) != tuple(size):
        raise ShapeError(f"{where}: image must be H0 x W0 x 3 = {size[0]} x {size[1]} x 3, got "
                         f"{' x '.join(map(str, image.shape))}")
    return np.ascontiguousarray(image)


def largest_object_click(seed: int = 0) -> Tuple[np.ndarray, Tuple[float, float]]:
    """Toy scene ``seed`` and a click deep inside its largest object."""
    from ..toy import click_inside, make_scene

    scene = make_scene(seed=seed)
    areas = scene.object_masks.reshape(len(scene.object_masks), -1).sum(1)  # K
    return scene.image, click_inside(scene.object_masks[int(np.argmax(areas))])


@torch.no_grad()
def load_backend(model: Any = None, image: Optional[np.ndarray] = None, reuse_embedding: bool = False) -> Backend:
    """The models and the embedded image for a session (everything is checked before the image
    encoder runs).

    model: None (the trained toy model), a ``ToyModel``, a ``SamPredictor``, a ``Sam`` or the path of
    a SAM checkpoint (``build_sam``). image: H0 x W0 x 3 uint8; default for the toy model: toy scene 0
    (and a first click inside its largest object); required with SAM. The image encoder runs once here,
    or not at all with ``reuse_embedding=True`` and a SamPredictor already set with this image (its
    size is checked; that it is the same picture is the caller's word).
    """
    from ..build_sam import build_sam
    from ..modeling.sam import Sam
    from ..predictor import SamPredictor
    from ..toy import ToyModel, toy_model

    first_click = None
    if model is None or isinstance(model, ToyModel):
        toy = toy_model() if model is None else model
        side = toy.image_size
        label = "the trained toy model" if toy.metadata else "a toy model (weights without training metadata)"
        if image is None:
            image, first_click = largest_object_click(0)
            label += " on toy scene 0"
        else:
            image = check_rgb_image(image, "live_explorer", (side, side))
        emb = toy.embed(image)  # 1 x C x H x W
        return Backend(toy.prompt_encoder, toy.mask_decoder, image, emb, side, label, first_click)
    if isinstance(model, (str, os.PathLike)):
        if image is None:
            raise ValueError("live_explorer: with a checkpoint, give the image too (image=, H0 x W0 x 3 uint8)")
        check_rgb_image(image, "live_explorer")
        model = build_sam(checkpoint=model)
    if isinstance(model, Sam):
        model = SamPredictor(model)
    if not isinstance(model, SamPredictor):
        raise TypeError(f"live_explorer: model must be None (the toy model), a ToyModel, a SamPredictor, a Sam "
                        f"or a checkpoint path, got {type(model).__name__}")
    if image is None:
        raise ValueError("live_explorer: with SAM, give the image (image=, H0 x W0 x 3 uint8); its embedding "
                         "is computed once")
    image = check_rgb_image(image, "live_explorer")
    if reuse_embedding:
        if not model.is_image_set or tuple(model.original_size) != tuple(image.shape[:2]):
            have = f"{model.original_size[0]} x {model.original_size[1]}" if model.is_image_set else "no image"
            raise ValueError(f"live_explorer: reuse_embedding needs the predictor set with this H0 x W0 = "
                             f"{image.shape[0]} x {image.shape[1]} image, it holds {have}")
    else:
        model.set_image(image)  # the image encoder, once
    sam = model.model
    return Backend(sam.prompt_encoder, sam.mask_decoder, image, model.features, sam.image_encoder.img_size,
                   f"SAM ({type(sam.image_encoder).__name__}, {sam.image_encoder.img_size} px input)")


@dataclass
class Geometry:
    """Where things are in the picture (pixels) at one pixel ratio, and what is computed once per
    image and ratio: the picture of the image, its dimmed gray, and the resamplers."""

    ratio: float
    width: int
    height: int
    main: Tuple[int, int, int, int]  # x, y, w, h
    thumbs: List[Tuple[int, int, int, int]]
    colour: np.ndarray  # main h x w x 3 uint8, the image
    gray: np.ndarray  # main h x w uint8
    thumb_gray: np.ndarray  # thumb h x w uint8


def build_geometry(image: np.ndarray, ratio: float) -> Geometry:
    """The layout of the picture: the main panel (long side PANEL x ratio) and three mask panels in a column."""
    h0, w0 = image.shape[:2]
    mh, mw = render.fit_long_side((h0, w0), int(round(PANEL * ratio)))
    gap = int(round(GAP * ratio))
    th = max(1, (mh - 2 * gap) // 3)
    tw = max(1, int(round(th * w0 / h0)))
    colour = render.picture_of(image, (mh, mw))  # mh x mw x 3
    thumb = render.picture_of(image, (th, tw))  # th x tw x 3
    thumbs = [(mw + gap, k * (th + gap), tw, th) for k in range(3)]
    return Geometry(ratio, mw + gap + tw, mh, (0, 0, mw, mh), thumbs, colour, render.dimmed_gray(colour),
                    render.dimmed_gray(thumb))


class ExplorerSession:
    """One image, one model, the prompts so far and the last run; see the module docstring.

    Methods that change what is shown return the picture (H x W x 3 uint8) after the run and the render:
    ``click(x, y, label=1)``, ``box(x0, y0, x1, y1)``, ``select(kind, layer, head, token, outline)``,
    ``undo()``, ``reset()``. Coordinates are the original image's pixels (x right, y down).
    """

    def __init__(self, model: Any = None, image: Optional[np.ndarray] = None, *, ratio: float = 1.0,
                 outline: Optional[float] = 0.5, percentile: float = render.DEFAULT_PERCENTILE,
                 reuse_embedding: bool = False, backend: Optional[Backend] = None) -> None:
        ratio, outline, percentile = check_ratio(ratio), check_share(outline), check_percentile(percentile)
        self.backend = backend if backend is not None else load_backend(model, image, reuse_embedding)
        self.image = self.backend.image
        h0, w0 = self.image.shape[:2]
        self.image_size = (h0, w0)
        dec = self.backend.mask_decoder
        self.num_heads = int(dec.transformer.num_heads)
        self.depth = len(dec.transformer.layers)
        self.num_mask_tokens = int(dec.num_mask_tokens)
        self.points: List[Tuple[float, float, int]] = []
        self.box_xyxy: Optional[Tuple[float, float, float, float]] = None
        self.history: List[Tuple[List[Tuple[float, float, int]], Optional[Tuple[float, float, float, float]]]] = []
        self.kind, self.layer, self.head, self.token = "token_to_image", "final", "mean", "mask1"
        self.outline = outline
        self.percentile = percentile
        self.record: Optional[AttentionRecord] = None
        self.masks: Optional[np.ndarray] = None  # 3 x h x w low-res logits
        self.iou: Optional[np.ndarray] = None  # 3
        self.limit: Optional[float] = None
        self.peak: Optional[float] = None
        self.runs = 0
        self.renders = 0
        self.geometry = build_geometry(self.image, ratio)
        self.picture: np.ndarray = np.zeros((1, 1, 3), np.uint8)
        if self.backend.first_click is not None:
            self._run([(*self.backend.first_click, 1)], None)
        self.render()

    # --- what the learner does ----------------------------------------------------------------

    def click(self, x: float, y: float, label: int = 1) -> np.ndarray:
        """Add a point at pixel (x, y) of the image, ``label`` 1 (foreground) or 0 (background), run the
        decoder and return the picture."""
        x, y = self.check_xy(x, y, "click")
        if isinstance(label, bool) or label not in (0, 1):
            raise ValueError(f"click: label must be 1 (foreground) or 0 (background), got {label!r}")
        return self._push_prompts(self.points + [(x, y, int(label))], self.box_xyxy)

    def box(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Set the box (one per prompt set; a new one replaces it), corners in image pixels, run and
        return the picture."""
        xa, ya = self.check_xy(x0, y0, "box")
        xb, yb = self.check_xy(x1, y1, "box")
        if xa == xb or ya == yb:
            raise ValueError(f"box: the corners must differ in x and in y, got ({x0}, {y0}) and ({x1}, {y1})")
        return self._push_prompts(self.points, (min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)))

    def undo(self) -> np.ndarray:
        """Take back the last point or box; returns the picture (unchanged when there is nothing to undo)."""
        if not self.history:
            return self.picture
        points, box = self.history[-1]
        self._run(points, box)
        self.history.pop()  # only once the run worked
        return self.render()

    def reset(self) -> np.ndarray:
        """Remove every prompt (undo brings them back one by one); returns the picture of the bare image."""
        before = (list(self.points), self.box_xyxy)
        self._run([], None)
        if before[0] or before[1] is not None:
            self.history.append(before)
        return self.render()

    def select(self, kind: Optional[str] = None, layer: Optional[Layer] = None, head: Optional[Head] = None,
               token: Optional[Union[int, str]] = None, *, outline: Any = "unchanged") -> np.ndarray:
        """Choose the map shown: ``kind`` token_to_image / image_to_token / token_self, ``layer`` 0, 1, ...
        or "final", ``head`` "mean" or 0..h-1, ``token`` a name (mask0, point0, pad...) or an index;
        ``outline`` a share of the attention to outline (0.5) or None. Only the render runs. Everything
        is checked before anything changes."""
        new_kind = self.kind if kind is None else kind
        if new_kind not in KINDS:
            raise ValueError(f"select: kind must be one of {KINDS}, got {kind!r}")
        layers = self.layers_of(new_kind)
        if layer is None:
            new_layer = self.layer if self.layer in layers else layers[-1]
        elif layer in layers and not isinstance(layer, bool):
            new_layer = layer
        else:
            raise ValueError(f"select: layer must be one of {layers} for {new_kind}, got {layer!r}")
        if head is None:
            new_head = self.head
        elif head == "mean" or (isinstance(head, (int, np.integer)) and not isinstance(head, bool)
                                and 0 <= int(head) < self.num_heads):
            new_head = head if head == "mean" else int(head)
        else:
            raise ValueError(f"select: head must be 'mean' or an index in 0..h-1 = 0..{self.num_heads - 1}, "
                             f"got {head!r}")
        new_token = self.token if token is None else self.token_name(token)
        new_outline = self.outline if isinstance(outline, str) and outline == "unchanged" else check_share(outline)
        self.kind, self.layer, self.head, self.token, self.outline = new_kind, new_layer, new_head, new_token, new_outline
        return self.render()

    def set_ratio(self, ratio: float) -> np.ndarray:
        """Render for a display of this device pixel ratio (the picture has PANEL x ratio pixels on the
        main panel's long side)."""
        ratio = check_ratio(ratio)
        if ratio != self.geometry.ratio:
            self.geometry = build_geometry(self.image, ratio)
        return self.render()

    # --- checks and names ----------------------------------------------------------------------

    def check_xy(self, x: Any, y: Any, where: str) -> Tuple[float, float]:
        h0, w0 = self.image_size
        try:
            fx, fy = float(x), float(y)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: x and y must be numbers (image pixels), got {x!r}, {y!r}") from None
        if isinstance(x, bool) or isinstance(y, bool) or not (np.isfinite(fx) and np.isfinite(fy)):
            raise ValueError(f"{where}: x and y must be finite numbers (image pixels), got {x!r}, {y!r}")
        if not (0.0 <= fx <= w0 and 0.0 <= fy <= h0):
            raise ValueError(f"{where}: (x, y) must lie on the image, 0 <= x <= W0 = {w0} and 0 <= y <= H0 = {h0}, "
                             f"got ({fx:g}, {fy:g})")
        return fx, fy

    def layers_of(self, kind: str) -> List[Layer]:
        """The layers that have a map of this kind: 0 .. depth-1, and "final" for token-to-image."""
        return list(range(self.depth)) + (["final"] if kind == "token_to_image" else [])

    def names(self) -> List[str]:
        """The T token names of the current prompts (iou, mask0..mask3 without prompts)."""
        if self.record is not None:
            return self.record.names(0)
        return ["iou"] + [f"mask{i}" for i in range(self.num_mask_tokens)]

    def token_name(self, token: Union[int, str]) -> str:
        names = self.names()
        if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
            if 0 <= int(token) < len(names):
                return names[int(token)]
            raise ValueError(f"select: token index must be in 0..T-1 = 0..{len(names) - 1}, got {token}")
        if isinstance(token, str):
            if token in names:
                return token
            short = [n for n in names if n.split(" (")[0] == token]
            if len(short) == 1:
                return short[0]
        raise ValueError(f"select: no token named {token!r}; tokens are {names}")

    def token_index(self) -> int:
        """The shown token's index in 0..T-1 (mask1 when the current prompts have no token of that name)."""
        names = self.names()
        return names.index(self.token) if self.token in names else names.index("mask1")

    def best_mask_token(self) -> str:
        """The token of the mask with the highest predicted IoU (mask1 before any run)."""
        if self.iou is None:
            return "mask1"
        return f"mask{1 + int(np.argmax(self.iou))}"

    # --- running -------------------------------------------------------------------------------

    def prompts(self, points: Sequence[Tuple[float, float, int]], box) -> Optional[Prompts]:
        """The prompt encoder's input (the input frame) for points and a box in image pixels; None for none."""
        if not points and box is None:
            return None
        device = self.backend.image_embeddings.device
        pts = None
        if points:
            xy = torch.tensor([[[x, y] for x, y, _ in points]], dtype=torch.float64)  # 1 x N x 2
            coords = to_input_frame(xy, self.image_size, self.backend.input_size).float().to(device)  # 1 x N x 2
            labels = torch.tensor([[lab for _, _, lab in points]], dtype=torch.int64, device=device)  # 1 x N
            pts = (coords, labels)
        boxes = None
        if box is not None:
            corners = torch.tensor([[box[0], box[1]], [box[2], box[3]]], dtype=torch.float64)  # 2 x 2
            boxes = to_input_frame(corners, self.image_size, self.backend.input_size).float()  # 2 x 2
            boxes = boxes.reshape(1, 4).to(device)  # 1 x 4
        return Prompts(points=pts, boxes=boxes)

    def _push_prompts(self, points, box) -> np.ndarray:
        before = (list(self.points), self.box_xyxy)
        self._run(points, box)
        self.history.append(before)
        return self.render()

    @torch.no_grad()
    def _run(self, points, box) -> None:
        """The prompt encoder and the decoder on these prompts, every attention map recorded. On a
        failure the previous prompts and run stay."""
        prompts = self.prompts(points, box)
        if prompts is None:
            record = masks = iou = None
        else:
            b = self.backend
            record = capture_attention(b.prompt_encoder, b.mask_decoder, b.image_embeddings, prompts)
            masks = record.masks[0].float().cpu().numpy()  # 3 x 4H x 4W logits
            iou = record.iou_pred[0].float().cpu().numpy()  # 3
        self.points, self.box_xyxy = list(points), box
        self.record, self.masks, self.iou = record, masks, iou
        self.runs += 1
        if self.runs == 1 and iou is not None:  # the first answer: show the mask SAM would pick
            self.token = self.best_mask_token()
        if self.token not in self.names():  # a prompt token that went away with its prompt
            self.token = "mask1"

    def trace_html(self) -> str:
        """The shape trace of the last run (prompt encoder and decoder, run again inside ``trace_shapes``),
        as an HTML table; computed when asked (the explorer's collapsed panel asks when opened)."""
        from ..tracing import trace_shapes

        prompts = self.prompts(self.points, self.box_xyxy)
        if prompts is None:
            return "<p>No prompt yet: click on the image.</p>"
        b = self.backend
        with torch.no_grad(), trace_shapes({"prompt_encoder": b.prompt_encoder, "mask_decoder": b.mask_decoder}) as t:
            run_decoder(b.prompt_encoder, b.mask_decoder, b.image_embeddings, prompts)
        return t.to_html()

    # --- rendering -----------------------------------------------------------------------------

    def current_map(self) -> np.ndarray:
        """The map chosen by the controls, float32 numpy: H x W (image kinds) or T x T (token_self);
        the same as ``record.map(kind, layer, token, head)``, taking the token's row before the mean
        over heads (numpy: torch's thread pool costs more than these few thousand numbers)."""
        assert self.record is not None
        rec = self.record
        (name,) = rec.by(layer=self.layer, kind=self.kind)
        probs = rec[name][0]  # h x N_q x N_k
        if self.kind == "token_to_image":
            probs = probs[:, self.token_index(), :]  # h x HW
        elif self.kind == "image_to_token":
            probs = probs[:, :, self.token_index()]  # h x HW
        a = probs.detach().float().cpu().numpy()  # h x HW, or h x T x T
        m = a.mean(axis=0, dtype=np.float32) if self.head == "mean" else a[self.head]  # HW or T x T
        return m.reshape(rec.grid()) if self.kind != "token_self" else m  # H x W or T x T

    def render(self) -> np.ndarray:
        """The picture for the current run and controls: H x W x 3 uint8 (white around the panels)."""
        g = self.geometry
        picture = np.full((g.height, g.width, 3), 255, dtype=np.uint8)  # H x W x 3
        x, y, w, h = g.main
        self.limit = self.peak = None
        if self.record is None:
            picture[y:y + h, x:x + w] = g.colour
        elif self.kind == "token_self":
            picture[y:y + h, x:x + w] = self.render_matrix(w, h)
        else:
            picture[y:y + h, x:x + w] = self.render_map()
        if self.kind != "token_self" or self.record is None:
            self.draw_prompts(picture[y:y + h, x:x + w])
        self.render_masks(picture)
        self.picture = picture
        self.renders += 1
        return picture

    def render_map(self) -> np.ndarray:
        """The chosen H x W map over the dimmed image, main h x w x 3 uint8."""
        g = self.geometry
        grid_map = self.current_map()  # H x W
        resample = render.map_resampler(grid_map.shape, self.image_size, self.backend.input_size, g.gray.shape)
        self.limit = render.robust_limit(grid_map, self.percentile)
        self.peak = float(grid_map.max())
        edges = None
        if self.outline is not None:
            cells = render.top_mass_cells(grid_map, self.outline)  # H x W
            edges = render.outline_pixels(cells, resample, width=max(1, int(round(2 * g.ratio))))
        return render.overlay(g.gray, resample(grid_map), self.limit, outline=edges)

    def matrix_layout(self, w: int, h: int, T: int) -> Tuple[int, int, int]:
        """(x, y, cell): where the T x T matrix sits in a w x h main panel, leaving room at the left
        and the bottom for the token names (the page writes them there)."""
        r = self.geometry.ratio
        left, bottom = int(round(MATRIX_LEFT * r)), int(round(MATRIX_BOTTOM * r))
        return left, 0, max(1, min(w - left, h - bottom) // T)

    def render_matrix(self, w: int, h: int) -> np.ndarray:
        """The T x T token self-attention, cells enlarged to fill the main panel (names beside it on
        the page), the shown token's row (its query) outlined: h x w x 3 uint8."""
        m = self.current_map()  # T x T
        T = m.shape[0]
        self.limit = render.robust_limit(m, 100.0)
        self.peak = float(m.max())
        x, y, cell = self.matrix_layout(w, h, T)
        cells = render.enlarge(render.colourize(m, self.limit), cell)  # T cell x T cell x 3
        out = np.full((h, w, 3), 255, dtype=np.uint8)  # h x w x 3
        block = out[y:y + T * cell, x:x + T * cell]
        block[...] = cells
        row = np.zeros((T * cell, T * cell), dtype=bool)
        t = self.token_index()
        row[t * cell:(t + 1) * cell] = True
        block[render.edge_pixels(row, max(1, int(round(2 * self.geometry.ratio))))] = FRAME_COLOUR
        return out

    def draw_prompts(self, panel: np.ndarray) -> None:
        """The points (green foreground, red background) and the box on the main panel (in place)."""
        h0, w0 = self.image_size
        ph, pw = panel.shape[:2]
        sx, sy = pw / w0, ph / h0
        r = self.geometry.ratio
        if self.box_xyxy is not None:
            x0, y0, x1, y1 = self.box_xyxy
            render.draw_rectangle(panel, x0 * sx, y0 * sy, x1 * sx, y1 * sy, width=max(1, int(round(2 * r))))
        for i, (x, y, lab) in enumerate(self.points):  # the shown token's point is drawn larger
            big = self.token.startswith(f"point{i} ")
            render.draw_disc(panel, x * sx, y * sy, (8 if big else 5) * r,
                             render.FOREGROUND if lab == 1 else render.BACKGROUND, ring_width=(3 if big else 2) * r)

    def mask_panels(self) -> List[np.ndarray]:
        """The three masks of the last run (mask1..mask3), each over the dimmed image: th x tw x 3
        uint8 each (gray panels before any run). Cached until the next run or pixel ratio."""
        key = (self.runs, self.geometry.ratio)
        if getattr(self, "_panels_key", None) == key:
            return self._panels
        g = self.geometry
        th, tw = g.thumb_gray.shape
        panels = [render.gray_rgb(g.thumb_gray) for _ in g.thumbs]  # each th x tw x 3
        if self.masks is not None:
            resample = render.map_resampler(self.masks.shape[-2:], self.image_size, self.backend.input_size, (th, tw))
            masks = resample(self.masks) > 0.0  # 3 x th x tw
            panels = [render.mask_picture(g.thumb_gray, masks[k]) if k < len(masks) else panels[k]
                      for k in range(len(g.thumbs))]
        self._panels_key, self._panels = key, panels
        return panels

    def render_masks(self, picture: np.ndarray) -> None:
        """The three mask panels into the picture (in place); the panel of the shown token's mask is framed."""
        g = self.geometry
        for k, ((x, y, w, h), panel) in enumerate(zip(g.thumbs, self.mask_panels())):
            picture[y:y + h, x:x + w] = panel
            if self.masks is not None and self.token == f"mask{k + 1}" and self.kind != "token_self":
                frame = render.edge_pixels(np.ones((h, w), dtype=bool), max(2, int(round(3 * g.ratio))))
                picture[y:y + h, x:x + w][frame] = FRAME_COLOUR

    # --- what the widget shows beside the picture ------------------------------------------------

    def caption(self) -> str:
        if self.record is None:
            return "No prompt yet: click on the image for a foreground point (shift-click: background), drag for a box."
        where = "final" if self.layer == "final" else f"layer {self.layer}"
        heads = f"mean of {self.num_heads} heads" if self.head == "mean" else f"head {self.head}"
        if self.kind == "token_to_image":
            what = f"where '{self.token}' reads the image"
        elif self.kind == "image_to_token":
            what = f"how much each image position reads '{self.token}'"
        else:
            what = f"which tokens each token reads (rows: queries; '{self.token}' outlined)"
        return f"{where} {KIND_TITLES[self.kind]}, {heads}: {what}"

    def matrix_meta(self) -> Optional[Dict[str, Any]]:
        """Where the T x T matrix's rows and columns are (picture pixels), for the names; None
        when no matrix is shown."""
        if self.kind != "token_self" or self.record is None:
            return None
        x, y, w, h = self.geometry.main
        names = self.names()
        left, top, cell = self.matrix_layout(w, h, len(names))
        return {"x": x + left, "y": y + top, "cell": cell, "names": names}

    def meta(self) -> Dict[str, Any]:
        """Everything the widget shows beside the picture (JSON-able)."""
        g = self.geometry
        names = self.names()
        ious = [] if self.iou is None else [round(float(v), 4) for v in self.iou]
        matrix = self.kind == "token_self"  # opaque cells; the maps lie over the dimmed image
        legend = (render.INFERNO if matrix else render.legend_colours())[:: 255 // 15]  # 16 x 3
        limit_text = ""
        if self.limit is not None:
            limit_text = (f"{self.limit:.3g} (the matrix's maximum)" if matrix else
                          f"{self.limit:.3g} (the map's {self.percentile:g}th percentile; largest {self.peak:.3g})")
        return {
            "width": g.width, "height": g.height, "ratio": g.ratio,
            "main": list(g.main), "thumbs": [list(t) for t in g.thumbs],
            "thumb_tokens": [f"mask{k + 1}" for k in range(len(g.thumbs))],
            "image_size": list(self.image_size),
            "ious": ious, "best": int(np.argmax(self.iou)) if self.iou is not None else -1,
            "kind": self.kind, "layer": self.layer, "head": self.head, "token": self.token,
            "kinds": [[KIND_TITLES[k], k] for k in KINDS],
            "layers": [["final" if v == "final" else f"layer {v}", v] for v in self.layers_of(self.kind)],
            "heads": [["mean", "mean"]] + [[f"head {i}", i] for i in range(self.num_heads)],
            "tokens": names,
            "outline": self.outline, "limit": limit_text,
            "legend": ["#%02x%02x%02x" % tuple(int(c) for c in rgb) for rgb in legend],
            "caption": self.caption(), "label": self.backend.label,
            "matrix": self.matrix_meta(),
            "clickable": self.kind != "token_self", "points": len(self.points),
            "has_box": self.box_xyxy is not None, "can_undo": bool(self.history),
        }


def check_share(share: Any) -> Optional[float]:
    if share is None:
        return None
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 < share <= 1.0:
        raise ValueError(f"outline must be None or a share of the attention in (0, 1], got {share!r}")
    return float(share)


def check_percentile(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 100.0:
        raise ValueError(f"percentile must be a number in (0, 100], got {p!r}")
    return float(p)


def check_ratio(ratio: Any) -> float:
    """A device pixel ratio, clamped to 1 .. MAX_RATIO (below 1 would draw under 512 pixels)."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not np.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"the pixel ratio must be a positive number, got {ratio!r}")
    return float(min(max(ratio, 1.0), MAX_RATIO))
