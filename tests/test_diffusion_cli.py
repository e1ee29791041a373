"""End to end: ``difcrys train`` (test variant) → ``difcrys sample`` → ``difcrys evaluate``, and CLI errors."""

import json

import numpy as np
import pytest

from conftest import ROOT, require_data
from difcrys.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    require_data("perov_5", "train_subset_dev.csv")
    d = tmp_path_factory.mktemp("diff") / "run"
    assert main(["train", str(ROOT / "configs" / "diffusion_perov5.yaml"), "--variant", "test", "--run-dir", str(d),
                 "--no-resume"]) == 0
    return d


# train + sample + evaluate compile three programs: ~40 s on an idle 2-core CPU, minutes when loaded
@pytest.mark.slow
def test_train_sample_evaluate(run_dir, tmp_path, capsys):
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["task"] == "diffusion"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(np.isfinite(json.loads(l)["val_loss"]) for l in lines)
    out = tmp_path / "s.extxyz"
    capsys.readouterr()
    rc = main(["sample", str(run_dir), "--n", "3", "--composition", "Sr1Ti1O3", "--out", str(out), "--json",
               "--quiet"])
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["n_valid"] + info["n_invalid"] == 3  # every structure accounted for
    if info["n_valid"]:
        from difcrys import io

        got = io.read_many(str(out))
        assert len(got) == info["n_valid"] and all(sorted(c.symbols) == ["O", "O", "O", "Sr", "Ti"] for c in got)
    if info["n_invalid"]:
        assert len(json.loads((tmp_path / "s.extxyz.invalid.json").read_text())) == info["n_invalid"]
    ev = tmp_path / "ev.json"
    assert main(["evaluate", str(run_dir), "--task", "csp", "--n-samples", "4", "--out", str(ev), "--json"]) == 0
    res = json.loads(ev.read_text())
    assert res["n_test"] == 4 and 0.0 <= res["match_rate"] <= 1.0
    assert res["n_matched"] == round(res["match_rate"] * 4)


@pytest.mark.slow
def test_cli_bad_inputs(run_dir, tmp_path, capsys):
    out = str(tmp_path / "x.cif")
    # an element never seen in training (the test variant trains on 48 structures)
    from difcrys.diffusion.model import DiffusionSpec
    from difcrys.crystal import chemical_symbol

    spec = DiffusionSpec.from_json(run_dir / "spec.json")
    unseen = next(z for z in range(1, 90) if z not in spec.elements)
    assert main(["sample", str(run_dir), "--n", "1", "--composition", f"{chemical_symbol(unseen)}1O3", "--out", out]) == 2
    assert "never seen" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "--n", "1", "--composition", "Sr3Ti3O9", "--out", out]) == 2
    assert "outside the trained range" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "--n", "1", "--out", out]) == 2
    assert "--composition" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "--n", "1", "--composition", "SrTiO3", "--condition", "gap=3..1",
                 "--out", out]) == 2
    assert "empty range" in capsys.readouterr().err
    assert main(["evaluate", str(run_dir), "--task", "xyz"]) == 2


@pytest.mark.slow
def test_adapter_finetuning_keeps_the_base_model_frozen(run_dir, tmp_path):
    """MatterGen-style fine-tuning: only adapter/conditioning parameters change; the base stays frozen."""
    import jax
    import yaml

    from difcrys.train.diffusion import load_run

    cfg = yaml.safe_load((ROOT / "configs" / "diffusion_perov5.yaml").read_text())
    test = cfg.pop("variants")["test"]
    from difcrys.train.config import deep_merge

    cfg = deep_merge(cfg, test)
    cfg["data"]["condition"] = ["heat_ref"]
    cfg["finetune"] = {"from_run": str(run_dir), "adapter_only": True}
    cfg["train"]["epochs"] = 1
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ft_dir = tmp_path / "ft"
    assert main(["train", str(path), "--run-dir", str(ft_dir)]) == 0
    _, _, base, _ = load_run(run_dir)
    spec, _, tuned, _ = load_run(ft_dir, "last")
    assert spec.cond_names == ("heat_ref",)
    fb = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(base)[0]}
    changed_adapter = False
    for k, v in jax.tree_util.tree_flatten_with_path(tuned)[0]:
        name = jax.tree_util.keystr(k)
        if name in fb:
            np.testing.assert_allclose(np.asarray(v), np.asarray(fb[name]), rtol=1e-5, atol=1e-7, err_msg=name)
        elif "adapter" in name and "out" in name:
            changed_adapter |= bool(np.any(np.asarray(v) != 0))
    assert changed_adapter
