"""The registry of the book's models: every name of ``python -m companion train NAME`` (chapter "Capstone").

:data:`MODELS` maps a name to a :class:`ModelSpec`: its recipe module in :mod:`companion.recipes`, the
config fields the name fixes and the defaults that differ from the recipe's. :mod:`companion.runs`
builds configs, trains, samples and evaluates by these names (and re-exports them).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

from companion.checkpoints import RunError

__all__ = ["MODELS", "ModelSpec", "DCGAN_DEFAULTS", "get_spec"]


@dataclass(frozen=True)
class ModelSpec:
    """A model name: its recipe module, the config fields the name ``fixed``, and ``defaults`` that differ
    from the recipe's."""

    name: str
    recipe: str
    help: str
    fixed: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    kind: str = "image"  # "image" (MNIST generator), "text", or "classifier"
    conditional: bool = False
    likelihood: bool = False  # has an IWAE NLL bound

    def load(self) -> ModuleType:
        try:
            return importlib.import_module(self.recipe)
        except ImportError as exc:
            raise RunError(f"model {self.name!r}: its recipe {self.recipe} cannot be imported ({exc})") from exc


DCGAN_DEFAULTS = {"loss": "ns", "steps": 6000, "lr_g": 1e-3, "lr_d": 1e-3, "g_ema": 0.999}  # the DCGAN and the cGAN
# the unconditional MNIST GANs condition on 100 k-means clusters of the training images (no labels): their samples
# stopped falling between two digits (chapter 04_2 section 8, benchmarks/results/mnist_targets.json)
SELF_CONDITION = {"self_condition": 100}
MODELS: dict[str, ModelSpec] = {s.name: s for s in [
    ModelSpec("vae", "companion.recipes.vae", "MLP variational autoencoder, Bernoulli decoder (MNIST)",
              fixed={"family": "vae"}, defaults={"z_dim": 20}, likelihood=True),
    ModelSpec("cvae", "companion.recipes.vae", "conditional VAE: generates a requested digit (MNIST)",
              fixed={"family": "cvae"}, defaults={"z_dim": 4}, conditional=True, likelihood=True),
    ModelSpec("vqvae", "companion.recipes.vae", "vector-quantised VAE with a per-position code prior (MNIST)",
              fixed={"family": "vqvae"}),
    # MNIST GANs: lr 1e-3, 6,000 steps, a moving average of G (the measurements behind these choices: chapter 04_2
    # section 8 and benchmarks/results/{gan_debugging,mnist_targets}.json)
    ModelSpec("gan", "companion.recipes.gan", "MLP GAN, non-saturating loss, self-conditioned on 100 clusters (MNIST)",
              fixed={"data": "mnist", "arch": "mlp", "conditional": False},
              defaults={"loss": "ns", "steps": 6000, "hidden": 512, "lr_g": 1e-3, "lr_d": 1e-3, "g_ema": 0.999,
                        **SELF_CONDITION}),
    ModelSpec("dcgan", "companion.recipes.gan", "DCGAN: convolutional generator and discriminator, self-conditioned "
              "on 100 clusters (MNIST)", fixed={"data": "mnist", "arch": "dcgan", "conditional": False},
              defaults={**DCGAN_DEFAULTS, **SELF_CONDITION}),
    ModelSpec("cgan", "companion.recipes.gan", "conditional DCGAN: generates a requested digit (MNIST)",
              fixed={"data": "mnist", "arch": "dcgan", "conditional": True}, conditional=True, defaults=DCGAN_DEFAULTS),
    ModelSpec("wgan-gp", "companion.recipes.gan", "Wasserstein GAN with gradient penalty (MNIST)",
              fixed={"data": "mnist", "loss": "wgan-gp", "conditional": False}, defaults={"arch": "dcgan"}),
    # unconditional flow matching guided towards 100 k-means clusters (no labels): chapter 07_2,
    # benchmarks/results/flow_self_guidance.json
    ModelSpec("flow", "companion.recipes.flow_matching", "flow matching with a U-Net, self-guided by 100 clusters, "
              "Euler sampler (MNIST)", fixed={"conditional": False}, defaults=SELF_CONDITION),
    ModelSpec("cflow", "companion.recipes.flow_matching", "digit-conditional flow matching, classifier-free "
              "guidance (MNIST)", fixed={"conditional": True}, conditional=True),
    # the DDPM predicts v and is self-guided like the flow: chapter 07_3, benchmarks/results/ddpm_v_self_guidance.json
    ModelSpec("ddpm", "companion.recipes.ddpm", "denoising diffusion (DDPM) with a U-Net predicting v, self-guided by "
              "100 clusters, DDIM sampler (MNIST)",
              defaults={"prediction": "v", **SELF_CONDITION}),
    ModelSpec("gpt", "companion.recipes.gpt", "character-level GPT on tiny-shakespeare", kind="text"),
    ModelSpec("transformer", "companion.recipes.transformer", "encoder-decoder Transformer", kind="text"),
    ModelSpec("classifier", "companion.recipes.classifier", "the MNIST CNN classifier behind the image metrics",
              kind="classifier"),
]}


def get_spec(spec: ModelSpec | str) -> ModelSpec:
    """The :class:`ModelSpec` of a model name (a spec is returned as is); :class:`RunError` for an unknown name."""
    if isinstance(spec, ModelSpec):
        return spec
    if spec not in MODELS:
        raise RunError(f"unknown model {spec!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[spec]
