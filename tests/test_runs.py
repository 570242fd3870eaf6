"""Tests of the library of runs (companion.runs): registry, configs, checkpoints, training runs, reference images."""

from __future__ import annotations

import json

import pytest
import torch

from companion import metrics as M
from companion import runs
from companion.classifiers import MNISTClassifier
from companion.recipes import classifier as recipe
from companion.recipes import vae as recipe_vae

# a model name of its own: the classifier recipe with one fixed field and two changed defaults
SPEC = runs.ModelSpec("tiny", "companion.recipes.classifier", "a test spec", fixed={"shift": 0},
                      defaults={"hidden": 64, "epochs": 2}, kind="classifier")



# ------------------------------------------------------------------ registry and configs


def test_every_model_name_has_a_spec_of_a_known_kind():
    assert list(runs.MODELS) == ["vae", "cvae", "vqvae", "gan", "dcgan", "cgan", "wgan-gp", "flow", "cflow", "ddpm",
                                 "gpt", "transformer", "classifier"]
    for name, spec in runs.MODELS.items():
        assert spec.name == name and spec.kind in ("image", "text", "classifier")
        assert spec.recipe.startswith("companion.recipes.")
        assert not spec.likelihood or spec.kind == "image"
    assert runs.get_spec("classifier") is runs.MODELS["classifier"] and runs.get_spec(SPEC) is SPEC
    with pytest.raises(runs.RunError, match="unknown model 'stylegan'; choose one of: vae, cvae"):
        runs.get_spec("stylegan")


def test_make_config_precedence_recipe_then_spec_then_base_then_overrides_then_fixed():
    cfg = runs.make_config(SPEC)
    assert isinstance(cfg, recipe.Config)
    assert (cfg.hidden, cfg.epochs, cfg.shift, cfg.dropout) == (64, 2, 0, 0.25)  # spec defaults, fixed, recipe
    cfg = runs.make_config(SPEC, base={"hidden": 32, "dropout": 0.1, "shift": 3})
    assert (cfg.hidden, cfg.epochs, cfg.shift, cfg.dropout) == (32, 2, 0, 0.1)  # base over defaults; fixed last
    cfg = runs.make_config(SPEC, {"hidden": 16, "shift": 0}, base={"hidden": 32, "epochs": 5})
    assert (cfg.hidden, cfg.epochs, cfg.shift) == (16, 5, 0)  # overrides over base; the fixed value may be repeated


@pytest.mark.parametrize("overrides, message", [
    ({"shift": 3}, "shift is fixed to 0 by the model name"),
    ({"depth": 3}, r"unknown config field\(s\) \['depth'\]"),
    ({"epochs": 0}, "invalid tiny config: need epochs >= 1"),
    ({"channels": [8]}, "invalid tiny config: channels must be two positive widths"),
])
def test_make_config_errors_are_run_errors(overrides, message):
    with pytest.raises(runs.RunError, match=message):
        runs.make_config(SPEC, overrides)


def test_a_recipe_that_cannot_be_imported_is_a_run_error():
    missing = runs.ModelSpec("ghost", "companion.recipes.does_not_exist", "not written yet")
    with pytest.raises(runs.RunError, match="its recipe companion.recipes.does_not_exist cannot be imported"):
        runs.make_config(missing)


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_restores_config_weights_history_and_segments(tmp_path):
    cfg = runs.make_config("classifier", {"hidden": 32, "seed": 3})
    model = recipe.build_model(cfg).eval()
    segments = [{"seed": 3, "steps": 5, "world_size": 1}]
    path = runs.save_checkpoint(tmp_path / "run" / "checkpoint.pt", model_name="classifier", cfg=cfg, model=model,
                                steps=5, history={"loss": [2.0, 1.5]}, seconds=1.25, segments=segments)
    assert not path.with_name("checkpoint.pt.tmp").exists()  # written atomically through a temporary file
    ckpt = runs.load_checkpoint(path, "classifier")
    assert ckpt["format"] == runs.CHECKPOINT_FORMAT and ckpt["segments"] == segments and ckpt["seconds"] == 1.25
    meta = json.loads((path.parent / "config.json").read_text())
    assert meta["model"] == "classifier" and meta["steps"] == 5 and "state_dict" not in meta
    spec, cfg2, model2, _ = runs.load_model(path)
    assert spec is runs.MODELS["classifier"] and cfg2 == cfg and not model2.training
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(model2.state_dict()[name], tensor, rtol=0, atol=0)


def test_missing_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(runs.RunError, match="does not exist .*python -m companion train vae"):
        runs.load_checkpoint(tmp_path / "nowhere" / "checkpoint.pt", "vae")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(runs.RunError, match="not a checkpoint written by"):
        runs.load_checkpoint(other)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(runs.RunError, match="cannot read checkpoint"):
        runs.load_checkpoint(garbage)
    unknown = tmp_path / "unknown.pt"
    torch.save({"format": runs.CHECKPOINT_FORMAT, "model": "stylegan", "config": {}, "state_dict": {}}, unknown)
    with pytest.raises(runs.RunError, match="unknown model 'stylegan'"):
        runs.load_model(unknown)


# ------------------------------------------------------------------ training runs


@pytest.mark.slow
def test_train_run_writes_checkpoint_config_and_metrics_and_resumes(mnist, tmp_path, capsys):
    out = tmp_path / "clf"
    tiny = {"epochs": 1, "train_size": 256, "batch_size": 128, "hidden": 16, "channels": [4, 8]}
    result = runs.train_run("classifier", tiny, out, progress=False, verbose=False, save_every=1)
    assert capsys.readouterr().out == ""  # verbose=False: silent
    assert result["steps"] == result["segment_steps"] == 2 and result["world_size"] == 1
    assert 0 <= result["eval"]["accuracy"] <= 1 and set(result["final"]) >= {"loss"}
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result))
    meta = json.loads((out / "config.json").read_text())
    assert meta["steps"] == 2 and meta["config"]["hidden"] == 16 and meta["segments"][0]["seed"] == 0
    # resuming: one more run of the configured length, data reseeded, metrics to another file, no evaluation
    again = runs.train_run("classifier", None, out, resume=True, progress=False, verbose=False, evaluate=False,
                           metrics_path=tmp_path / "second.json")
    assert again["steps"] == 4 and again["segment_steps"] == 2 and "eval" not in again
    assert (tmp_path / "second.json").exists()
    ckpt = runs.load_checkpoint(out / "checkpoint.pt", "classifier")
    assert [s["seed"] for s in ckpt["segments"]] == [0, 1] and len(ckpt["history"]["loss"]) == 4
    with pytest.raises(runs.RunError, match="does not exist"):
        runs.train_run("classifier", tiny, tmp_path / "empty", resume=True, progress=False, verbose=False)


# ------------------------------------------------------------------ reference images and the real baseline


def test_reference_images_are_a_seeded_random_subset_without_repeats(mnist):
    x_all, y_all = mnist
    x, y = runs.reference_images("test", 300, seed=4)
    x2, _ = runs.reference_images("test", 300, seed=4)
    assert x.shape == (300, 1, 28, 28) and torch.equal(x, x2)
    assert not torch.equal(x, x_all[:300])  # not simply the first images of the (ordered) test set
    flat = {tuple(row.tolist()) for row in (x.flatten(1) * 255).round().to(torch.uint8)}
    assert len(flat) == 300  # without replacement (MNIST test images are all distinct)
    whole, labels = runs.reference_images("test")
    assert whole.shape == x_all.shape and torch.equal(torch.bincount(labels), torch.bincount(y_all))
    with pytest.raises(ValueError, match="n must be in"):
        runs.reference_images("test", 10**6)


def test_real_baseline_scores_training_images_against_the_reference_test_images(mnist):
    torch.manual_seed(0)
    clf = MNISTClassifier()
    base = runs.real_baseline(clf, 200, seed=3)
    x_ref, y_ref = runs.reference_images("test", 200, seed=3)
    x_train, _ = runs.reference_images("train", 200, seed=3)
    # the FID is symmetric up to the round-off of the eigendecompositions (about 1e-9 relative)
    assert base["fid"] == pytest.approx(M.feature_fid(x_train, x_ref, clf), rel=1e-6)
    probs = M.classifier_outputs(clf, x_ref)[1]
    assert base["inception_score"] == pytest.approx(M.inception_score(probs), rel=1e-9)
    assert base["label_accuracy"] == pytest.approx(M.label_accuracy(probs, y_ref))


@pytest.mark.slow
def test_evaluate_model_scores_given_samples_as_it_scores_its_own(mnist):
    clf = MNISTClassifier().eval()  # untrained: the two evaluations must agree, not be good
    clf.test_accuracy = 0.0
    cfg = runs.make_config("vae", {"epochs": 0.1, "train_size": 256, "hidden": [16], "z_dim": 2})
    model = recipe_vae.build_model(cfg).eval()
    own = runs.evaluate_model("vae", cfg, model, n=50, iwae_k=2, progress=False, classifier=clf)
    x = runs.sample_model("vae", cfg, model, 50, seed=0)
    given = runs.evaluate_model("vae", cfg, model, n=50, iwae_k=2, progress=False, classifier=clf, samples=x)
    assert given["fid"] == own["fid"] and given["inception_score"] == own["inception_score"]
    with pytest.raises(runs.RunError, match="samples must hold n = 50 images, got 10"):
        runs.evaluate_model("vae", cfg, model, n=50, progress=False, classifier=clf, samples=x[:10])
