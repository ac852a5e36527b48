"""fm_to_ntm's auxiliary target (NTM_METHOD §5) once the transporter has moved away from the identity.

"u" holds μ_P to the FM model's output on the u-states; "transported" to the FM model's mean from the x-states,
carried into f_T's coordinates. At f_T = identity they are the same target; after, only "transported" is met by the
FM model itself expressed in the transporter's coordinates."""
import pytest
import torch
from torch import nn

from ntm_core.flow_matching import ntm_from_flow_matching
from ntm_core.model import NTM
from ntm_core.objectives import NTMObjective
from ntm_core.predictor import Predictor
from ntm_core.trajectory import TrajectorySchedule
from ntm_core.transporter import Transporter

from .conftest import TEXT_DIM, perturb_, random_text


class Conjugated(nn.Module):
    """A predictor that is the FM model in a transporter's coordinates: u ↦ f_T(μ_FM(f_T⁻¹(u)))."""

    def __init__(self, fm_as_ntm: Predictor, transporter: Transporter):
        super().__init__()
        self.inner, self.transporter = fm_as_ntm, transporter
        self.patches, self.config = fm_as_ntm.patches, fm_as_ntm.config

    def forward(self, src, t, s, text, cache=None):
        b, k = src.shape[:2]
        rep = None if text is None else text.repeat_interleave(k)
        x = self.transporter.inverse(src.flatten(0, 1), t.repeat(b), rep).unflatten(0, (b, k))
        mu, log_sigma, extra = self.inner(x, t, s, text)
        u, _ = self.transporter(mu.flatten(0, 1), s.repeat(b), rep)
        return u.unflatten(0, (b, k)), log_sigma, extra


def _aux(ntm: NTM, fm: Predictor, target: str) -> float:
    objective = NTMObjective(ntm, frozen_fm=fm, aux_target=target)
    x0 = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, m = objective(x0, random_text(2), 3, torch.Generator().manual_seed(2), aux_weight=1.0)
    return float(m["aux"])


@pytest.fixture
def fm():
    torch.manual_seed(0)
    p = Predictor(sample_size=8, patch_size=2, width=32, depth=2, heads=4, text_dim=TEXT_DIM, markov=True,
                  s_conditioning=False).double()
    return perturb_(p, 0.05)


def _transporter(moved: bool) -> Transporter:
    torch.manual_seed(1)
    t = Transporter(sample_size=8, patch_size=2, width=32, heads=4, text_dim=TEXT_DIM).double()
    return perturb_(t, 0.1, seed=3) if moved else t


def test_at_the_identity_transporter_both_targets_are_the_fm_model(fm):
    ntm = ntm_from_flow_matching(fm, _transporter(moved=False), TrajectorySchedule(t_min=0.05)).double()
    assert _aux(ntm, fm, "u") == 0.0 and _aux(ntm, fm, "transported") == 0.0


def test_a_moved_transporter_only_the_transported_target_sees(fm):
    # the FM weights used on u-states: "u" is met exactly, whatever f_T does to the states
    ntm = ntm_from_flow_matching(fm, _transporter(moved=True), TrajectorySchedule(t_min=0.05)).double()
    assert _aux(ntm, fm, "u") == 0.0 and _aux(ntm, fm, "transported") > 1e-3
    # the FM model expressed in f_T's coordinates: "transported" is met (to the inverse's precision), "u" is not
    conj = NTM(ntm.transporter, Conjugated(ntm.predictor, ntm.transporter), ntm.schedule)
    assert _aux(conj, fm, "transported") < 1e-12 and _aux(conj, fm, "u") > 1e-3


def test_an_unknown_target_is_refused(fm):
    ntm = ntm_from_flow_matching(fm, _transporter(moved=False), TrajectorySchedule(t_min=0.05)).double()
    with pytest.raises(ValueError, match="aux_target"):
        NTMObjective(ntm, frozen_fm=fm, aux_target="x")
