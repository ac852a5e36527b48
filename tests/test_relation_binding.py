"""The labels behind analysis.relation_binding, checked against renders and the evaluator: the rewrites a
caption is scored against are false of its image except the reworded one, and the low-side object is where the
renderer put it."""
import numpy as np

from analysis.relation_binding import low_side, rewrites
from ntm_core.data.shapes_eval import check
from ntm_core.data.shapes import render, split_specs


def _renders(n: int = 60):
    rng = np.random.default_rng(3)
    specs = split_specs("test", ["position"])["position"][:n]
    return [(spec, *render(spec, rng)) for spec in specs]


def test_only_the_reworded_caption_still_holds():
    for spec, image, _ in _renders():
        assert check(spec, image)
        verdicts = {name: check(alt, image) for name, alt in rewrites(spec).items()}
        assert verdicts == {"side flipped": False, "objects swapped": False, "same layout reworded": True,
                            "other axis": False, "first colour changed": False}, (spec, verdicts)


def test_low_side_object_is_left_or_on_top():
    for spec, _, placed in _renders():
        (c0, k0, y0, x0, _), (c1, k1, y1, x1, _) = placed
        horizontal = spec.relation in ("left of", "right of")
        first_low = (x0 < x1) if horizontal else (y0 < y1)
        assert low_side(spec) == ((c0, k0) if first_low else (c1, k1)), (spec, placed)
