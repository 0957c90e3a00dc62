"""Which documented-shape contract describes a module, and the lookups a trace uses.

SAM's contracts (``contract``: the decoder and the prompt encoder) and SAM 2's decoder
(``contract_sam2``, built on SAM's) in one place: ``component_kind`` names the contract of a
module, ``lookup`` finds a module path's entry in it, ``CONFIG_READERS`` turn a call's inputs into
the symbols' values.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Dict, Optional, Tuple

from . import contract, contract_sam2
from .contract import COMPONENT_CLASSES, Entry

CONTRACTS: Dict[str, Tuple[Entry, ...]] = {**contract.CONTRACTS, **contract_sam2.CONTRACTS}
CONFIG_READERS = {**contract.CONFIG_READERS, contract_sam2.KIND: contract_sam2.sam2_decoder_config}


def component_kind(module: object) -> Optional[str]:
    """"decoder", "prompt_encoder" or "sam2_decoder" for a module a contract describes, else None.

    By class name (``COMPONENT_CLASSES``), so the official modules match too; a MaskDecoder with the
    attributes ``pred_obj_scores`` and ``use_high_res_features`` (sam_explain.sam2's and the official
    sam2's; SAM's has neither) is SAM 2's. SAM 2's PromptEncoder has SAM's shapes: "prompt_encoder"."""
    kind = COMPONENT_CLASSES.get(type(module).__name__)
    if kind == "decoder" and hasattr(module, "pred_obj_scores") and hasattr(module, "use_high_res_features"):
        return contract_sam2.KIND
    return kind


@lru_cache(maxsize=None)
def _compiled(component: str) -> Tuple[Tuple[re.Pattern, Entry], ...]:
    return tuple(
        (re.compile(re.escape(e.path).replace(r"\*", r"\d+") + r"\Z"), e) for e in CONTRACTS[component]
    )


@lru_cache(maxsize=None)
def lookup(component: str, path: str) -> Optional[Entry]:
    """The contract entry of the module at ``path`` (relative to the component), or None."""
    if component not in CONTRACTS:
        return None
    for pattern, entry in _compiled(component):
        if pattern.match(path):
            return entry
    return None
