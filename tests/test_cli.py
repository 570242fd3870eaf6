"""Tests of the command-line trainer ``python -m companion`` (companion.cli over the library companion.runs)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from companion import cli, runs
from companion.classifiers import MNISTClassifier
from companion.recipes import classifier as classifier_recipe

REPO = Path(__file__).resolve().parents[1]


def run(argv, capsys):
    """``main(argv)`` in-process: (exit status, stdout, stderr); argparse's SystemExit counts as a status."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err



# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize("command", ["train", "sample", "evaluate"])
def test_every_subcommand_and_model_has_help(command, capsys):
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0 and all(name in out for name in runs.MODELS)
    for name, spec in runs.MODELS.items():
        try:
            spec.load()
        except runs.RunError:
            continue  # a recipe that is not written yet: its help says so
        code, out, _ = run([command, name, "--help"], capsys)
        assert code == 0 and "usage: python -m companion" in out, (command, name)
        if command == "train":
            assert "--seed" in out and "--resume" in out
        else:
            assert "--checkpoint" in out


def test_unknown_model_is_a_clear_error_with_status_2(capsys):
    code, _, err = run(["train", "stylegan"], capsys)
    assert code == 2 and "invalid choice: 'stylegan'" in err and "vae" in err
    with pytest.raises(cli.CLIError, match="unknown model 'stylegan'"):  # CLIError: an alias of runs.RunError
        runs.make_config("stylegan")


@pytest.mark.parametrize("argv, message", [
    (["train", "classifier", "--epochs", "ten"], "invalid int value: 'ten'"),
    (["train", "classifier", "--lr", "nan"], "invalid float value: 'nan'"),
    (["train", "classifier", "--batch-size", "1.5"], "invalid int value: '1.5'"),
    (["train", "classifier", "--channels", "16,x"], "invalid comma-separated list of int value"),
    (["sample", "classifier", "-n", "0"], "invalid positive int value: '0'"),
    (["train", "classifier", "--epochs", "-3"], "invalid classifier config: need epochs >= 1"),
    (["train", "classifier", "--shift", "9"], "shift must be in [0, 4]"),
    (["train", "vae", "--epochs", "-3"], "invalid vae config: need epochs > 0"),
])
def test_invalid_numbers_are_clear_errors_with_status_2(argv, message, capsys, tmp_path):
    if argv[1] != "classifier":
        pytest.importorskip(runs.MODELS[argv[1]].recipe)
    code, _, err = run([*argv, "--out", tmp_path] if argv[0] == "train" else argv, capsys)
    assert code == 2 and message in err, err


def test_missing_checkpoint_is_a_clear_error_with_status_2(capsys, tmp_path):
    missing = tmp_path / "nowhere" / "checkpoint.pt"
    for command in ("sample", "evaluate"):
        code, _, err = run([command, "classifier", "--checkpoint", missing], capsys)
        assert code == 2 and "does not exist" in err and "python -m companion train classifier" in err
    code, _, err = run(["train", "classifier", "--out", tmp_path / "empty", "--resume"], capsys)
    assert code == 2 and "does not exist" in err


def test_a_file_that_is_not_our_checkpoint_is_refused(capsys, tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    code, _, err = run(["sample", "classifier", "--checkpoint", other], capsys)
    assert code == 2 and "not a checkpoint written by" in err


def test_config_options_follow_the_recipe_fields():
    pytest.importorskip("companion.recipes.vae")
    pytest.importorskip("companion.recipes.gan")
    cfg = runs.make_config("vae", {"hidden": [64, 32], "z_dim": 4})
    assert cfg.family == "vae" and cfg.hidden == [64, 32] and cfg.z_dim == 4
    gan = runs.make_config("cgan")
    assert (gan.data, gan.arch, gan.conditional, gan.loss) == ("mnist", "dcgan", True, "ns")
    for name in ("gan", "dcgan"):  # the unconditional GANs' measured defaults differ from the recipe's
        cfg = runs.make_config(name)
        assert (cfg.lr_g, cfg.lr_d) == (1e-3, 1e-3)
        assert runs.make_config(name, {"g_ema": 0.5, "steps": 5}).g_ema == 0.5
        assert cfg.self_condition == 100 and runs.make_config(name, {"self_condition": 0}).self_condition == 0
    assert runs.make_config("gan").g_ema == 0.999 and runs.make_config("gan").steps == 6000
    assert runs.make_config("cgan").self_condition == 0  # labels, not clusters
    assert runs.make_config("cvae").z_dim == 4 and runs.make_config("vae").z_dim == 20
    with pytest.raises(runs.RunError, match="fixed"):
        runs.make_config("vae", {"family": "cvae"})
    with pytest.raises(runs.RunError, match="unknown config field"):
        runs.make_config("vae", {"depth": 3})
    parse, kind = cli._parser_for(list[int])
    assert kind == "value" and parse("512, 256") == [512, 256]
    parse, _ = cli._parser_for(int | None)
    assert parse("none") is None and parse("7") == 7
    assert cli._parser_for(bool)[1] == "bool"


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_gives_identical_outputs_and_loads_weights_only(tmp_path):
    from companion.recipes import classifier as recipe

    cfg = recipe.Config(hidden=32, seed=3)
    model = recipe.build_model(cfg).eval()
    path = runs.save_checkpoint(tmp_path / "run" / "checkpoint.pt", model_name="classifier", cfg=cfg, model=model,
                                steps=5, history={"loss": [2.0, 1.5]}, seconds=1.25)
    raw = torch.load(path, weights_only=True)  # plain data only: no pickled code can run
    assert raw["steps"] == 5 and raw["config"]["hidden"] == 32 and raw["history"]["loss"] == [2.0, 1.5]
    assert json.loads((path.parent / "config.json").read_text())["config"] == raw["config"]
    spec, cfg2, model2, _ = runs.load_model(path, "classifier")
    assert cfg2 == cfg and not model2.training
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model2(x), model(x), rtol=0, atol=0)
    with pytest.raises(runs.RunError, match="holds a 'classifier' model, not 'vae'"):
        runs.load_checkpoint(path, "vae")


class Payload:
    """Stands for arbitrary pickled code in a checkpoint from an untrusted source."""


def test_weights_only_loading_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": runs.CHECKPOINT_FORMAT, "model": "vae", "payload": Payload()}, path)
    with pytest.raises(runs.RunError, match="cannot read checkpoint"):
        runs.load_checkpoint(path)


# ------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_train_resume_sample_and_evaluate_the_classifier(mnist_env, capsys):
    out = mnist_env / "clf"
    args = ["train", "classifier", "--epochs", "1", "--train-size", "512", "--batch-size", "128", "--out", out,
            "--no-progress", "--threads", "1"]
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    first = json.loads((out / "metrics.json").read_text())
    assert first["steps"] == 4 and 0 <= first["eval"]["accuracy"] <= 1 and "replica_checksums" in first
    code, _, err = run([*args, "--resume", "--epochs", "2"], capsys)
    assert code == 0, err
    ckpt = runs.load_checkpoint(out / "checkpoint.pt", "classifier")
    assert ckpt["steps"] == 4 + 8 and len(ckpt["history"]["loss"]) == 12
    assert [s["seed"] for s in ckpt["segments"]] == [0, 1] and ckpt["config"]["epochs"] == 2
    code, _, err = run(["sample", "classifier", "--checkpoint", out / "checkpoint.pt"], capsys)
    assert code == 2 and "discriminative" in err
    code, stdout, err = run(["evaluate", "classifier", "--checkpoint", out / "checkpoint.pt"], capsys)
    assert code == 0, err
    result = json.loads((out / "eval.json").read_text())
    assert result["recipe_accuracy"] == ckpt_accuracy(out) and result["steps"] == 12


def ckpt_accuracy(out: Path) -> float:
    _, cfg, model, _ = runs.load_model(out / "checkpoint.pt")
    from companion.recipes import classifier as recipe

    return recipe.evaluate(cfg, model)["accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("model, extra", [
    ("vae", ["--epochs", "0.5", "--train-size", "256", "--hidden", "64", "--z-dim", "4"]),
    ("cgan", ["--steps", "2", "--batch-size", "16", "--hidden", "64", "--n-eval", "50"]),
])
def test_train_sample_evaluate_an_image_model(model, extra, mnist_env, capsys, monkeypatch):
    pytest.importorskip(runs.MODELS[model].recipe)
    # an untrained classifier stands in for the cached one (training it is another test's job)
    clf = MNISTClassifier().eval()
    clf.test_accuracy = 0.0
    monkeypatch.setattr(classifier_recipe, "mnist_classifier", lambda *a, **k: clf)
    out = mnist_env / model
    code, _, err = run(["train", model, *extra, "--out", out, "--no-progress", "--seed", "1"], capsys)
    assert code == 0, err
    ckpt = out / "checkpoint.pt"
    code, stdout, err = run(["sample", model, "--checkpoint", ckpt, "-n", "20", "--out", out / "s.png",
                             "--tensor", out / "s.pt"], capsys)
    assert code == 0, err
    assert (out / "s.png").stat().st_size > 1000
    samples = torch.load(out / "s.pt", weights_only=True)
    assert samples.shape == (20, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 1
    code, _, err = run(["evaluate", model, "--checkpoint", ckpt, "--n-eval", "100", "--iwae-k", "4"]
                       if model == "vae" else ["evaluate", model, "--checkpoint", ckpt, "--n-eval", "100"], capsys)
    assert code == 0, err
    result = json.loads((out / "eval.json").read_text())
    for key in ("fid", "inception_score", "coverage", "real_fid", "real_inception_score"):
        assert result[key] >= 0, key
    assert ("nll_iwae" in result) == (model == "vae") and ("label_accuracy" in result) == (model == "cgan")
    assert result["data"] in ("mnist", "mnist-fallback")


@pytest.mark.slow
def test_python_dash_m_companion_runs_as_a_program(tmp_path):
    argv = [sys.executable, "-m", "companion", "evaluate", "classifier", "--checkpoint", tmp_path / "x.pt"]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.slow
def test_gpt_resumes_exactly_from_its_saved_optimizer_state(capsys, monkeypatch, tmp_path, shakespeare_env):
    """A recipe with ``init_state`` (GPT) continues where it stopped: 3 + 3 steps equal 6 steps in one go."""
    pytest.importorskip("companion.recipes.gpt")
    small = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
             "--warmup-steps", "2", "--max-steps", "6", "--no-progress", "--no-eval"]
    # run 6 steps, saving every 3; keep a copy of the step-3 checkpoint, as if the run had died there
    original = runs.save_checkpoint

    def save_and_keep(path, **kwargs):
        out = original(path, **kwargs)
        if kwargs["steps"] == 3:
            (tmp_path / "mid").mkdir()
            shutil.copy(out, tmp_path / "mid" / "checkpoint.pt")
        return out

    monkeypatch.setattr(runs, "save_checkpoint", save_and_keep)
    code, _, err = run(["train", "gpt", *small, "--save-every", "3", "--out", tmp_path / "full"], capsys)
    assert code == 0, err
    code, _, err = run(["train", "gpt", "--out", tmp_path / "mid", "--resume", "--no-progress", "--no-eval"], capsys)
    assert code == 0, err
    a = runs.load_checkpoint(tmp_path / "mid" / "checkpoint.pt", "gpt")
    b = runs.load_checkpoint(tmp_path / "full" / "checkpoint.pt", "gpt")
    assert a["steps"] == b["steps"] == 6 and len(a["history"]["loss"]) == 6
    assert a["history"]["loss"] == pytest.approx(b["history"]["loss"], rel=1e-5)
    for name, tensor in b["state_dict"].items():
        torch.testing.assert_close(a["state_dict"][name], tensor, rtol=1e-5, atol=1e-6)
