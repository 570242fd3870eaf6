"""The GAN variants of chapter "GAN training and variants", compared on one task and budget.

:data:`VARIANTS` names each variant by the :class:`companion.recipes.gan.Config` fields that define it;
:func:`compare_variants` trains each one with the GAN recipe, for several seeds, and scores it with the
recipe's ``evaluate`` (mode coverage on the ring). ``benchmarks/gan_variants.py`` runs it for the table.
"""

from __future__ import annotations

from dataclasses import replace

from companion.recipes.gan import Config, build_model, config_dict, evaluate, train

__all__ = ["VARIANTS", "compare_variants"]


VARIANTS: dict[str, dict] = {
    "GAN (non-saturating)": {"loss": "ns"},
    "GAN (minimax)": {"loss": "minimax"},
    "WGAN (weight clipping)": {"loss": "wgan"},
    "WGAN-GP": {"loss": "wgan-gp"},
    "LSGAN": {"loss": "lsgan"},
    "DRAGAN": {"loss": "dragan"},
    "GAN + spectral norm": {"loss": "ns", "spectral_norm": True},
    "hinge + spectral norm": {"loss": "hinge", "spectral_norm": True},
    "conditional GAN": {"loss": "ns", "conditional": True},
}
"""The variants the chapter compares on the ring, as name -> the Config fields that define it."""


def compare_variants(base: Config, variants: dict[str, dict] | None = None, seeds=(0,), *,
                     cache_name: str | None = None, progress: bool = True, return_models: bool = False):
    """Train every variant on the same task and budget; return one row of metrics per (variant, seed).

    Args:
        base: the shared settings (data, steps, sizes, ...); each variant overrides some fields.
        variants: name -> Config overrides (default :data:`VARIANTS`).
        seeds: seeds to run for each variant.
        cache_name: if given, weights and histories are cached with
            :func:`companion.train.train_or_load` under ``<cache_name>-<loss>...``.
        progress: show a progress bar per run.
        return_models: also return the trained models, keyed by ``(variant, seed)``.

    Returns:
        Rows ``{"variant", "seed", "seconds", **evaluate(...)}``; ``seconds`` is the training
        time (as measured when the run was trained, also for cached runs). With
        ``return_models``, the pair ``(rows, models)``.
    """
    from companion.train import train_or_load

    rows, models = [], {}
    for name, overrides in (variants or VARIANTS).items():
        for seed in seeds:
            cfg = replace(base, seed=seed, **overrides)
            model = build_model(cfg)
            if cache_name is None:
                history = train(cfg, model, progress=progress)
            else:
                tag = "-".join([cache_name, cfg.loss] + (["sn"] if cfg.spectral_norm else [])
                               + (["cond"] if cfg.conditional else []))
                history = train_or_load(tag, model, lambda m, c=cfg: train(c, m, progress=progress), config_dict(cfg))
            rows.append({"variant": name, "seed": seed, "seconds": history.seconds, **evaluate(cfg, model)})
            models[name, seed] = model
    return (rows, models) if return_models else rows
