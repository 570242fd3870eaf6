"""Bad input to ``python -m companion`` (#12, #17 item 3): every user error is an ``error:`` line with status 2
that names the problem and what was expected, found before any work; divergence, corrupt checkpoints and
stale metrics are caught; ``--eval-every`` records quality over training."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from companion import checkpoints, runs
from companion.classifiers import MNISTClassifier
from companion.recipes import classifier as classifier_recipe
from companion.recipes import vae as vae_recipe

from .test_cli import run

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_VAE = ["--train-size", "256", "--batch-size", "64", "--hidden", "16", "--z-dim", "2", "--epochs", "1",
            "--no-progress"]  # 4 steps


def error_line(err: str, command: str, model: str) -> str:
    """The ``python -m companion CMD MODEL: error: ...`` line of stderr (asserting that there is one)."""
    prefix = f"python -m companion {command} {model}: error: "
    lines = [line for line in err.splitlines() if line.startswith(prefix)]
    assert lines, err
    return lines[0][len(prefix):]


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a recipe starts training, sampling or evaluating (the errors must come first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the bad input was found")

    monkeypatch.setattr(vae_recipe, "train", refuse)
    monkeypatch.setattr(runs, "sample_model", refuse)
    monkeypatch.setattr(runs, "evaluate_model", refuse)


@pytest.fixture
def vae_checkpoint(tmp_path) -> Path:
    """An untrained tiny VAE saved as a checkpoint (no data needed)."""
    cfg = runs.make_config("vae", {"hidden": [16], "z_dim": 2})
    model = vae_recipe.build_model(cfg)
    return runs.save_checkpoint(tmp_path / "vae" / "checkpoint.pt", model_name="vae", cfg=cfg, model=model, steps=0)



def strict_json(path: Path):
    """The JSON of ``path``, refusing the non-standard ``NaN`` / ``Infinity``."""
    def refuse(name):
        raise AssertionError(f"{path} holds {name}: not valid JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


# ------------------------------------------------------------------ 1. output paths, checked before the work


def test_train_out_that_is_an_existing_file_fails_before_training(tmp_path, capsys, no_training):
    existing = tmp_path / "some_existing_file"
    existing.write_text("keep me")
    code, _, err = run(["train", "vae", "--out", existing, "--no-progress"], capsys)
    assert code == 2
    assert f"output directory (--out) {existing} is an existing file, expected a directory" in error_line(
        err, "train", "vae")
    assert existing.read_text() == "keep me"


def test_train_out_below_a_file_cannot_be_created(tmp_path, capsys, no_training):
    (tmp_path / "file").write_text("")
    code, _, err = run(["train", "vae", "--out", tmp_path / "file" / "run"], capsys)
    assert code == 2
    assert f"cannot be created: {tmp_path / 'file'} is a file, not a directory" in error_line(err, "train", "vae")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_train_out_in_a_read_only_directory_fails_before_training(tmp_path, capsys, no_training):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run(["train", "vae", "--out", locked / "run"], capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2 and f"directory {locked} is not writable" in error_line(err, "train", "vae")


def test_train_metrics_path_that_is_a_directory_fails_before_training(tmp_path, capsys, no_training):
    code, _, err = run(["train", "vae", "--out", tmp_path / "run", "--metrics", tmp_path], capsys)
    assert code == 2
    assert f"metrics file (--metrics) {tmp_path} is a directory, expected a file path" in error_line(
        err, "train", "vae")


def test_train_metrics_path_below_a_file_fails_before_training(tmp_path, capsys, no_training):
    (tmp_path / "afile").write_text("")
    code, _, err = run(["train", "vae", "--out", tmp_path / "run", "--metrics", tmp_path / "afile" / "m.json"], capsys)
    assert code == 2 and "is a file, not a directory" in error_line(err, "train", "vae")
    assert not (tmp_path / "run").exists()


def test_sample_out_that_is_a_directory_fails_before_sampling(vae_checkpoint, tmp_path, capsys, no_training):
    code, _, err = run(["sample", "vae", "--checkpoint", vae_checkpoint, "--out", tmp_path], capsys)
    assert code == 2
    assert f"sample file (--out) {tmp_path} is a directory, expected a file path" in error_line(err, "sample", "vae")


def test_sample_tensor_below_a_file_fails_before_sampling(vae_checkpoint, tmp_path, capsys, no_training):
    (tmp_path / "afile").write_text("")
    code, _, err = run(["sample", "vae", "--checkpoint", vae_checkpoint, "--out", tmp_path / "s.png",
                        "--tensor", tmp_path / "afile" / "s.pt"], capsys)
    assert code == 2
    line = error_line(err, "sample", "vae")
    assert "tensor file (--tensor)" in line and "is a file, not a directory" in line


def test_evaluate_json_that_is_a_directory_fails_before_evaluating(vae_checkpoint, tmp_path, capsys, no_training):
    code, _, err = run(["evaluate", "vae", "--checkpoint", vae_checkpoint, "--json", tmp_path], capsys)
    assert code == 2
    assert f"metrics file (--json) {tmp_path} is a directory, expected a file path" in error_line(
        err, "evaluate", "vae")


def test_the_library_checks_output_paths_too(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(runs.RunError, match="is an existing file, expected a directory"):
        runs.train_run("vae", {"hidden": [16]}, tmp_path / "f", progress=False, verbose=False)
    with pytest.raises(runs.RunError, match="is a directory, expected a file path"):
        checkpoints.check_output_file(tmp_path)
    deeper = tmp_path / "new" / "deeper" / "x.json"
    assert checkpoints.check_output_file(deeper) == deeper and not deeper.parent.exists()  # checked, not created


# ------------------------------------------------------------------ 2. divergence and strict JSON


def test_save_checkpoint_refuses_non_finite_weights_and_keeps_the_old_file(vae_checkpoint):
    before = vae_checkpoint.read_bytes()
    cfg = runs.make_config("vae", {"hidden": [16], "z_dim": 2})
    model = vae_recipe.build_model(cfg)
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    with pytest.raises(checkpoints.DivergenceError, match=r"refusing to save vae weights with NaN or infinite values "
                                                          r"after step 7 \(encoder"):
        runs.save_checkpoint(vae_checkpoint, model_name="vae", cfg=cfg, model=model, steps=7)
    assert vae_checkpoint.read_bytes() == before and issubclass(checkpoints.DivergenceError, runs.RunError)


def test_json_is_strict_non_finite_numbers_become_null(tmp_path):
    data = {"fid": float("nan"), "losses": [1.5, float("inf"), -float("inf")], "n": 3}
    assert checkpoints.to_json(data) == '{"fid": null, "losses": [1.5, null, null], "n": 3}'
    path = checkpoints.write_json(tmp_path / "m.json", data)
    assert strict_json(path) == {"fid": None, "losses": [1.5, None, None], "n": 3}
    assert not (tmp_path / "m.json.tmp").exists()


def test_a_non_finite_loss_in_the_history_is_a_divergence_error_naming_step_and_loss():
    checkpoints.check_finite({"loss": [1.0, 0.5], "lr": [0.1, 0.1]}, 2)  # finite: nothing happens
    with pytest.raises(checkpoints.DivergenceError, match=r"training diverged at step 3: loss = nan \(expected "
                                                          r"finite values; try a lower learning rate\); kept"):
        checkpoints.check_finite({"loss": [1.0, math.nan], "lr": [0.1, 0.1]}, 3, lambda: "kept")


@pytest.mark.slow
def test_divergence_stops_training_with_status_2_and_keeps_the_last_good_checkpoint(mnist_env, capsys):
    out = mnist_env / "run"
    code, _, err = run(["train", "vae", *TINY_VAE, "--out", out, "--no-eval"], capsys)
    assert code == 0, err
    good, metrics = (out / "checkpoint.pt").read_bytes(), (out / "metrics.json").read_text()
    diverge = ["train", "vae", *TINY_VAE, "--epochs", "3", "--out", out, "--lr", "1e6", "--lr-schedule", "constant"]
    code, _, err = run(diverge, capsys)
    line = error_line(err, "train", "vae")
    assert code == 2 and "training diverged at step" in line and "loss = nan" in line, line
    assert "expected finite values" in line and f"{out / 'checkpoint.pt'} was left as it was" in line
    assert (out / "checkpoint.pt").read_bytes() == good and (out / "metrics.json").read_text() == metrics
    # with --save-every the snapshots before the divergence are kept; none holds non-finite weights
    code, _, err = run([*diverge, "--save-every", "1"], capsys)
    line = error_line(err, "train", "vae")
    assert code == 2 and "keeps the last good weights, of step" in line
    ckpt = runs.load_checkpoint(out / "checkpoint.pt", "vae")
    assert not checkpoints.non_finite_tensors(ckpt["state_dict"]) and ckpt["config"]["lr"] == 1e6
    assert all(math.isfinite(v) for v in ckpt["history"]["loss"])
    assert not (out / "metrics.json").exists()  # it described the replaced checkpoint


# ------------------------------------------------------------------ 3. the GPT recipe's config


@pytest.mark.parametrize("flags, message", [
    (["--max-steps", "-5"], "max_steps must be an int >= 1, got -5"),
    (["--max-steps", "0"], "max_steps must be an int >= 1, got 0"),
    (["--temperature", "-1"], "temperature must be >= 0 (0 = greedy decoding), got -1.0"),
    (["--top-p", "2"], "top_p must be None or in (0, 1], got 2.0"),
    (["--top-k", "0"], "top_k must be None or an int >= 1, got 0"),
    (["--n-head", "3"], "n_embd must be divisible by n_head (each head gets n_embd / n_head dimensions), "
                        "got n_embd = 128 and n_head = 3"),
    (["--block-size", "0"], "block_size must be an int >= 1, got 0"),
    (["--dropout", "1"], "dropout must be in [0, 1), got 1.0"),
])
def test_gpt_config_is_validated_before_training(flags, message, tmp_path, capsys):
    out = tmp_path / "gpt"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"a trained checkpoint")
    code, _, err = run(["train", "gpt", *flags, "--out", out, "--no-progress"], capsys)
    assert code == 2 and error_line(err, "train", "gpt") == f"invalid gpt config: {message}"
    assert (out / "checkpoint.pt").read_bytes() == b"a trained checkpoint"  # not replaced


def gpt_checkpoint(path: Path, **config) -> Path:
    from companion.recipes import gpt as recipe

    cfg = recipe.Config(n_layer=1, n_head=2, n_embd=16, block_size=16, sample_length=24)
    model = recipe.build_model(cfg)
    path = runs.save_checkpoint(path, model_name="gpt", cfg=cfg, model=model, steps=0)
    if config:  # as an older version, which did not validate, would have saved it
        blob = torch.load(path, weights_only=True)
        blob["config"].update(config)
        torch.save(blob, path)
    return path


def test_sample_gpt_takes_temperature_top_k_top_p_overrides(shakespeare_env, tmp_path, capsys):
    ckpt = gpt_checkpoint(tmp_path / "gpt" / "checkpoint.pt")
    code, _, err = run(["sample", "gpt", "--checkpoint", ckpt, "-n", "2", "--temperature", "0", "--top-k", "5",
                        "--top-p", "0.9", "--out", tmp_path / "s.txt"], capsys)
    assert code == 0, err
    first, second = (tmp_path / "s.txt").read_text().rstrip("\n").split("\n\n=====\n\n")
    assert first == second and len(first) == 1 + 24  # temperature 0: greedy, the same text twice
    code, _, err = run(["sample", "gpt", "--checkpoint", ckpt, "--top-p", "2"], capsys)
    assert code == 2 and error_line(err, "sample", "gpt") == "invalid gpt config: top_p must be None or in (0, 1], " \
                                                            "got 2.0"


def test_a_saved_invalid_sampling_setting_is_an_error_line_and_can_be_overridden(shakespeare_env, tmp_path, capsys):
    ckpt = gpt_checkpoint(tmp_path / "gpt" / "checkpoint.pt", temperature=-1.0)
    code, _, err = run(["sample", "gpt", "--checkpoint", ckpt, "-n", "1"], capsys)
    assert code == 2 and "temperature must be >= 0 (0 = greedy decoding), got -1.0" in error_line(
        err, "sample", "gpt")
    code, _, err = run(["sample", "gpt", "--checkpoint", ckpt, "-n", "1", "--temperature", "0.5"], capsys)
    assert code == 0, err


# ------------------------------------------------------------------ 4. user errors are error lines, not tracebacks


@pytest.mark.parametrize("flags, message", [
    (["--z-dim", "0"], "z_dim must be >= 1, got 0"),
    (["--activation", "foo"], "activation must be one of ['elu', 'gelu', 'leaky_relu', 'relu', 'silu', 'tanh'], "
                              "got 'foo'"),
    (["--hidden", "16,-4"], "hidden must be a non-empty list of widths >= 1, got [16, -4]"),
    (["--codebook-size", "0"], "codebook_size must be >= 1, got 0"),
])
def test_vae_config_errors_are_error_lines(flags, message, tmp_path, capsys, no_training):
    code, _, err = run(["train", "vae", *flags, "--out", tmp_path], capsys)
    assert code == 2 and error_line(err, "train", "vae") == f"invalid vae config: {message}"


def test_missing_data_is_an_error_line_that_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path / "nonexistent"))
    monkeypatch.setenv("COMPANION_OFFLINE", "1")
    code, _, err = run(["train", "vae", *TINY_VAE, "--out", tmp_path / "run"], capsys)
    line = error_line(err, "train", "vae")
    assert code == 2 and line.startswith("the data cannot be loaded: ")
    assert f"not in {tmp_path / 'nonexistent' / 'mnist'}" in line and "point COMPANION_DATA at a folder" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_resume_with_another_architecture_names_the_changed_field(vae_checkpoint, capsys, no_training):
    code, _, err = run(["train", "vae", "--out", vae_checkpoint.parent, "--resume", "--z-dim", "5"], capsys)
    line = error_line(err, "train", "vae")
    assert code == 2 and f"the weights in {vae_checkpoint} do not fit the vae model of this config" in line
    assert "(changed: z_dim: 2 -> 5)" in line and "--resume keeps the architecture" in line


# ------------------------------------------------------------------ 5. corrupt checkpoints


def test_a_truncated_checkpoint_is_named_as_truncated(vae_checkpoint, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(vae_checkpoint.read_bytes()[:1000])
    with pytest.raises(runs.RunError, match=rf"cannot read checkpoint {cut}: it is truncated or not a torch file "
                                            r"\(1,000 bytes;"):
        runs.load_checkpoint(cut, "vae")


def test_a_zero_byte_checkpoint_is_named_as_empty(tmp_path, capsys):
    empty = tmp_path / "checkpoint.pt"
    empty.write_bytes(b"")
    code, _, err = run(["sample", "vae", "--checkpoint", empty], capsys)
    assert code == 2 and f"checkpoint {empty} is empty (0 bytes)" in error_line(err, "sample", "vae")


def test_a_directory_given_as_checkpoint_suggests_the_file_inside(vae_checkpoint, capsys):
    folder = vae_checkpoint.parent
    code, _, err = run(["evaluate", "vae", "--checkpoint", folder], capsys)
    assert code == 2 and error_line(err, "evaluate", "vae") == (
        f"checkpoint {folder} is a directory, expected the checkpoint.pt file inside it — "
        f"did you mean {folder / 'checkpoint.pt'}?")


def test_a_file_that_is_not_a_torch_file_is_named_so(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights")
    with pytest.raises(runs.RunError, match="it is truncated or not a torch file"):
        runs.load_checkpoint(text)


# ------------------------------------------------------------------ 6. stale metrics after an interrupted run


@pytest.mark.slow
def test_an_interrupted_resume_leaves_no_stale_metrics_beside_the_newer_checkpoint(mnist_env, capsys, monkeypatch):
    out = mnist_env / "run"
    code, _, err = run(["train", "vae", *TINY_VAE, "--out", out, "--no-eval"], capsys)
    assert code == 0, err
    assert strict_json(out / "metrics.json")["steps"] == 4
    original = runs.save_checkpoint

    def save_then_interrupt(path, **kwargs):  # the run is killed right after its first --save-every snapshot
        original(path, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "save_checkpoint", save_then_interrupt)
    code, _, err = run(["train", "vae", *TINY_VAE, "--out", out, "--resume", "--save-every", "2"], capsys)
    assert code == 130 and "interrupted" in err
    assert runs.load_checkpoint(out / "checkpoint.pt", "vae")["steps"] == 6
    assert not (out / "metrics.json").exists()  # it described the step-4 checkpoint


# ------------------------------------------------------------------ 7. --eval-every: quality over training


@pytest.mark.parametrize("flags, message", [
    (["--eval-every", "0"], "--eval-every must be a number of steps >= 1, got 0"),
    (["--eval-every", "-3"], "--eval-every must be a number of steps >= 1, got -3"),
])
def test_bad_eval_every_is_an_error_line(flags, message, tmp_path, capsys, no_training):
    code, _, err = run(["train", "vae", *flags, "--out", tmp_path], capsys)
    assert code == 2 and error_line(err, "train", "vae") == message


def test_eval_every_on_a_model_that_is_not_an_image_generator_is_an_error(tmp_path, capsys):
    code, _, err = run(["train", "classifier", "--eval-every", "5", "--out", tmp_path], capsys)
    line = error_line(err, "train", "classifier")
    assert code == 2 and line.startswith("--eval-every records image metrics of the MNIST generators (vae, cvae")
    assert line.endswith("classifier is not one")


def test_eval_n_out_of_range_is_an_error(mnist_env, capsys, no_training):
    code, _, err = run(["train", "vae", "--eval-every", "2", "--eval-n", "1", "--out", mnist_env / "r"], capsys)
    assert code == 2 and "--eval-n must be an int in [2, " in error_line(err, "train", "vae")
    assert "got 1" in err


@pytest.mark.slow
def test_eval_every_records_one_quality_record_every_n_steps_without_changing_the_training(
        mnist_env, capsys, monkeypatch):
    clf = MNISTClassifier().eval()  # an untrained stand-in for the cached classifier
    clf.test_accuracy = 0.0
    monkeypatch.setattr(classifier_recipe, "mnist_classifier", lambda *a, **k: clf)
    code, _, err = run(["train", "vae", *TINY_VAE, "--out", mnist_env / "q", "--no-eval", "--eval-every", "2",
                        "--eval-n", "60"], capsys)
    assert code == 0, err
    result = strict_json(mnist_env / "q" / "metrics.json")
    assert [r["step"] for r in result["quality"]] == [2, 4] and result["eval_n"] == 60
    for record in result["quality"]:
        assert {"step", "seconds", "fid", "inception_score", "coverage", "class_kl", "histogram"} <= set(record)
        assert record["n"] == 60 and sum(record["histogram"]) == 60 and 0 <= record["coverage"] <= 1
    code, _, err = run(["train", "vae", *TINY_VAE, "--out", mnist_env / "plain", "--no-eval"], capsys)
    assert code == 0, err
    a = runs.load_checkpoint(mnist_env / "q" / "checkpoint.pt")
    b = runs.load_checkpoint(mnist_env / "plain" / "checkpoint.pt")
    assert a["history"] == b["history"] and "quality" not in strict_json(mnist_env / "plain" / "metrics.json")
    for name, tensor in b["state_dict"].items():
        torch.testing.assert_close(a["state_dict"][name], tensor, rtol=0, atol=0)
