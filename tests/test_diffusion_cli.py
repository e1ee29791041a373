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
