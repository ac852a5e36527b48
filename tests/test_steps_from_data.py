"""analysis.steps_from_data: start the sampler at a real trajectory's state. Checked with exact velocities (no
training): a model that knows the data keeps it from every start; one that knows other data keeps it only where
nothing is sampled; a flow-matching folder is read as exactly its own Gaussian sampler."""
import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from analysis.steps_from_data import as_ntm, steps_from_data
from ntm_core.data.shapes import Spec, render
from ntm_core.images import from_uint8
from ntm_core.pipeline import FlowMatchingPipeline, NTMPipeline
from ntm_core.predictor import Predictor
from ntm_core.trajectory import TrajectorySchedule
from ntm_core.transporter import Transporter

from .conftest import perturb_
from .test_exact_velocity_draws import SPEC, ExactVelocity

OTHER = Spec("position", (("green", "triangle"), ("yellow", "circle")), relation="above")


def renders(spec):
    return torch.stack([from_uint8(render(spec, np.random.default_rng([5, i]))[0]) for i in range(16)])


def prompts(n=6):
    return [{"caption": "", "spec": SPEC.to_dict(), "seed": 100 + i} for i in range(n)]


def test_the_data_survive_every_start_only_for_a_model_of_that_data():
    def pipe(spec):
        identity = Transporter(sample_size=32, patch_size=4, num_blocks=1, layers_per_block=1, width=16, heads=2)
        return NTMPipeline(identity, ExactVelocity(renders(spec)), TrajectorySchedule(t_min=0.05))

    df = steps_from_data(pipe(SPEC), prompts(), num_steps=4, guidance=1.0)
    assert df["start step"].tolist() == [4, 3, 2, 1, 0] and (df["score"] == 1.0).all(), df
    other = steps_from_data(pipe(OTHER), prompts(), num_steps=4, guidance=1.0).set_index("start step")
    assert other.loc[0, "score"] == 1.0, "nothing sampled: the real x_{t_0}"
    assert other.loc[4, "score"] == 0.0 and other.loc[4, "colour_match"] == 0.0, "from noise it draws its own data"


def test_a_flow_matching_folder_is_read_as_its_gaussian_sampler():
    predictor = Predictor(sample_size=32, patch_size=4, width=16, depth=1, heads=2, markov=True, s_conditioning=False)
    fm = FlowMatchingPipeline(perturb_(predictor, 0.1, 0), FlowMatchEulerDiscreteScheduler(shift=1.0))
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(3)]  # noqa: E731
    ref = fm(num_inference_steps=4, batch_size=3, generator=gens(), output_type="model", sampler="gaussian").images
    ntm = as_ntm(fm)
    assert ntm.transporter.is_identity and (ref - ref.mean()).abs().max() > 0.1  # not a trivial sampler
    out = ntm.sample(3, num_steps=4, generator=gens()).images
    assert torch.allclose(out.clamp(-1, 1), ref, atol=1e-5)  # output_type="model" clamps to [−1, 1]
