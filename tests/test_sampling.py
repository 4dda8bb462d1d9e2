"""utils.sampling: scheduler construction by name and a sampling loop that is right for every sampler."""

from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from utils.sampling import FAST_SAMPLER, SAMPLERS, generate, guided_at, make_scheduler, network_evaluations

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_unet(channels=1, size=8):
    torch.manual_seed(0)
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))


class OracleUNet(torch.nn.Module):
    """The exact noise predictor for data that is a single constant image: eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar).

    It reads x_t from its input, so it only gives the right answer if the sampler scaled the input
    the way the model was trained (scale_model_input) and started from correctly scaled noise.
    """

    def __init__(self, alphas_cumprod, value=0.5, shape=(1, 4, 4)):
        super().__init__()
        self.config = SimpleNamespace(in_channels=shape[0], sample_size=shape[1])
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives generate() a device and dtype
        self.alphas_cumprod = alphas_cumprod
        self.value = value

    def forward(self, x, t):
        abar = self.alphas_cumprod[torch.as_tensor(t).round().long()]
        eps = (x - abar.sqrt() * self.value) / (1 - abar).sqrt()
        return SimpleNamespace(sample=eps)


def test_unknown_sampler_lists_the_choices():
    with pytest.raises(ValueError, match="ddpm, ddim, dpm\\+\\+, dpm\\+\\+3m"):
        make_scheduler("lms", DDPMScheduler())


def test_network_evaluations_count_guided_steps_twice_and_heun_steps_twice():
    train = DDPMScheduler()
    assert network_evaluations(make_scheduler("dpm++", train), 25) == 25
    assert network_evaluations(make_scheduler("dpm++", train), 25, guided=True) == 50
    assert network_evaluations(make_scheduler("heun", train), 10) == 19  # the last step is a plain Euler step
    # trailing spacing of 10 steps: t = 999, 899, ..., 99; guided only where 0 <= t <= 500 (5 of them)
    assert network_evaluations(make_scheduler("ddim", train), 10, guided=True, guide_interval=(0, 500)) == 15
    assert guided_at(torch.tensor(499.0), None) and not guided_at(501, (0, 500)) and guided_at(500, (0, 500))


def test_the_fast_setting_stays_within_fifty_evaluations_with_autoguidance():
    """The script's default sampler (issue: at most 50 network evaluations per image, a guided step counting two)."""
    assert FAST_SAMPLER["sampler"] in SAMPLERS
    train = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    scheduler = make_scheduler(FAST_SAMPLER["sampler"], train)
    assert network_evaluations(scheduler, FAST_SAMPLER["num_inference_steps"], guided=True,
                               guide_interval=FAST_SAMPLER["guide_interval"]) <= 50


@pytest.mark.parametrize("name", SAMPLERS)
def test_make_scheduler_keeps_the_training_schedule(name):
    train = DDPMScheduler(num_train_timesteps=500, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    for source in (train, train.config):
        scheduler = make_scheduler(name, source)
        assert scheduler.config.num_train_timesteps == 500
        assert scheduler.config.beta_schedule == "squaredcos_cap_v2"
        assert scheduler.config.prediction_type == "v_prediction"
        scheduler.set_timesteps(4)
        assert int(scheduler.timesteps[0]) == 499  # the first step starts from pure noise


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_samples_on_the_training_noise_schedule(name):
    """A default DDPMScheduler's betas are not in the config's explicit values: Heun's own defaults must not win."""
    train = DDPMScheduler()
    torch.testing.assert_close(make_scheduler(name, train).alphas_cumprod, train.alphas_cumprod)


@pytest.mark.parametrize("name", SAMPLERS)
def test_generate_shape_range_and_determinism(name):
    unet = tiny_unet(channels=3)
    scheduler = make_scheduler(name, DDPMScheduler())
    images = generate(unet, scheduler, num_images=5, num_inference_steps=3, batch_size=2,
                      generator=torch.Generator().manual_seed(1))
    again = generate(unet, scheduler, num_images=5, num_inference_steps=3, batch_size=2,
                     generator=torch.Generator().manual_seed(1))
    other = generate(unet, scheduler, num_images=5, num_inference_steps=3, batch_size=2,
                     generator=torch.Generator().manual_seed(2))
    assert images.shape == (5, 3, 8, 8) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, again)
    assert not torch.equal(images, other)


@pytest.mark.parametrize("name", SAMPLERS)
def test_generate_with_an_exact_model_recovers_the_data(name):
    train = DDPMScheduler()
    oracle = OracleUNet(train.alphas_cumprod)
    images = generate(oracle, make_scheduler(name, train), num_images=3, num_inference_steps=10,
                      generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(images, torch.full_like(images, 0.5), atol=2e-3, rtol=0)


def test_euler_without_input_scaling_would_be_wrong():
    """Guards the oracle test: skipping scale_model_input (as DDPMPipeline does) breaks Euler."""
    train = DDPMScheduler()
    scheduler = make_scheduler("euler", train)
    scheduler.scale_model_input = lambda sample, timestep: sample
    images = generate(OracleUNet(train.alphas_cumprod), scheduler, num_images=3, num_inference_steps=10,
                      generator=torch.Generator().manual_seed(0))
    assert (images - 0.5).abs().max() > 0.1


def test_generate_rejects_nonsense_counts():
    with pytest.raises(ValueError, match="num_images"):
        generate(tiny_unet(), make_scheduler("ddim", DDPMScheduler()), num_images=0, num_inference_steps=2)


@pytest.mark.parametrize("name", SAMPLERS)
def test_autoguidance_extrapolates_from_the_guide_to_the_model(name):
    """Exact predictors of two constant images, 0.5 (model) and 0.3 (guide): guidance w lands on 0.3 + w * 0.2."""
    train = DDPMScheduler()
    model, guide = OracleUNet(train.alphas_cumprod, value=0.5), OracleUNet(train.alphas_cumprod, value=0.3)
    images = generate(model, make_scheduler(name, train), num_images=3, num_inference_steps=10,
                      generator=torch.Generator().manual_seed(0), guide=guide, guidance_scale=1.5)
    torch.testing.assert_close(images, torch.full_like(images, 0.6), atol=3e-3, rtol=0)


def test_guide_interval_guides_only_the_steps_inside_it():
    """Exact predictors of 0.5 (model) and 0.3 (guide): the last, least noisy steps settle the image, so guiding
    only at t <= 500 still lands on the guided 0.6 and guiding only at t >= 500 on the model's own 0.5; an
    interval that holds every step is full guidance."""
    train = DDPMScheduler()
    model, guide = OracleUNet(train.alphas_cumprod, value=0.5), OracleUNet(train.alphas_cumprod, value=0.3)

    def run(interval):
        return generate(model, make_scheduler("dpm++", train), num_images=2, num_inference_steps=10,
                        generator=torch.Generator().manual_seed(0), guide=guide, guidance_scale=1.5,
                        guide_interval=interval)

    torch.testing.assert_close(run((0, 999)), run(None))
    torch.testing.assert_close(run((0, 500)), torch.full_like(run(None), 0.6), atol=3e-3, rtol=0)
    torch.testing.assert_close(run((500, 999)), torch.full_like(run(None), 0.5), atol=3e-3, rtol=0)


def test_autoguidance_with_scale_one_or_an_identical_guide_changes_nothing():
    unet, scheduler = tiny_unet(), make_scheduler("ddpm", DDPMScheduler())
    plain = generate(unet, scheduler, num_images=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    for guide, scale in ((tiny_unet(), 2.0), (None, 1.0)):
        guided = generate(unet, scheduler, num_images=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                          guide=guide, guidance_scale=scale)
        torch.testing.assert_close(guided, plain, atol=1e-5, rtol=0)


def test_autoguidance_rejects_a_scale_without_guide_and_a_mismatched_guide():
    unet, scheduler = tiny_unet(), make_scheduler("ddpm", DDPMScheduler())
    with pytest.raises(ValueError, match="needs a guide"):
        generate(unet, scheduler, num_images=1, num_inference_steps=2, guidance_scale=2.0)
    with pytest.raises(ValueError, match="same model"):
        generate(unet, scheduler, num_images=1, num_inference_steps=2, guide=tiny_unet(channels=3), guidance_scale=2.0)
