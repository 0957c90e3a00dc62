"""The live explorer: click on the image, watch SAM's decoder answer.

    import sam_explain as se
    se.live_explorer()                        # the toy model on a toy scene, in JupyterLab
    se.live_explorer(predictor, image=photo)  # SAM: a SamPredictor, a Sam or a checkpoint path

  session   ExplorerSession: the model, the image and its embedding (computed once), the prompts,
            the last run with every attention map, the picture (numpy, ``sam_explain.render``)
  widget    LiveExplorer: the anywidget that shows it in JupyterLab (static/explorer.js, .css)
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .session import ExplorerSession, load_backend


def live_explorer(model: Any = None, image: Optional[np.ndarray] = None, **options: Any):
    """The live explorer widget (display it: the last line of a notebook cell).

    model: None (the trained toy model), a ``ToyModel``, a ``SamPredictor``, a ``Sam`` or a SAM
    checkpoint path; image: H0 x W0 x 3 uint8 (default with the toy model: toy scene 0, with a
    first click inside its largest object). The image embedding is computed once, here.
    options: ``outline`` (share of the attention outlined, 0.5; None for none), ``percentile``
    (the colour limit, 99), ``ratio`` (the pixel ratio to render for before the page tells it),
    ``reuse_embedding`` (True: a SamPredictor already set with ``image`` keeps its embedding).
    Returns a ``LiveExplorer``; its ``click``, ``box``, ``select``, ``undo`` and ``reset`` return the
    picture as shown (H x W x 3 uint8).
    """
    try:
        from .widget import LiveExplorer
    except ImportError as err:
        raise ImportError(f"live_explorer needs anywidget (pip install 'sam-explain[notebook]'): {err}") from err
    return LiveExplorer(ExplorerSession(model, image, **options))


__all__ = ["ExplorerSession", "live_explorer", "load_backend"]
