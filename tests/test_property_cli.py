"""`difcrys train` (task: property) → `difcrys predict` → `difcrys evaluate`, end to end, and the
property YAML configs (difcrys.train.property.train_property_config)."""

import json
import pathlib

import numpy as np
import pytest

from conftest import require_data
from difcrys.cli import main
from difcrys.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("property_*.yaml"))


def _stored(run, split="test"):
    rows = (run / f"predictions_{split}.csv").read_text().splitlines()[1:]
    ids = [r.split(",")[0] for r in rows]
    y, p = (np.array([float(r.split(",")[k]) for r in rows]) for k in (1, 2))
    return ids, y, p


def test_train_predict_evaluate_cli(tmp_path, capsys):
    require_data("jarvis_supercon", "train.csv")
    run = tmp_path / "run"
    cfg = ROOT / "configs" / "property_jarvis_tc_cgcnn.yaml"
    assert main(["train", str(cfg), "--variant", "test", "--run-dir", str(run)]) == 0
    text = capsys.readouterr().out
    summary = json.loads(text[text.index("{\n"):text.index("\nrun folder:")])
    meta = json.loads((run / "config.json").read_text())
    assert meta["task"] == "property" and meta["config"]["target"] == "tc_k"  # `difcrys evaluate` dispatch
    assert summary["n_train"] == 24 and summary["n_test"] == 8 and summary["epochs"] == 2
    ids, y, p = _stored(run)
    # the stored test MAE is the MAE of the stored predictions, in K (Tc = -prop of the CSV)
    assert summary["test_mae"] == pytest.approx(np.mean(np.abs(p - y)), rel=1e-5)
    from difcrys.data import load_shared

    te = load_shared("jarvis_supercon", "test")[:8]
    np.testing.assert_allclose(y, -te.properties["prop"], rtol=1e-5)

    # evaluate on the run's recorded test split reproduces the training run's test MAE
    out = tmp_path / "eval" / "test.json"
    assert main(["evaluate", str(run), "--json", "--out", str(out)]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["n"] == 8 and ev["units"] == "K"
    assert ev["mae"] == pytest.approx(summary["test_mae"], rel=1e-5)
    assert ev["mae_of_training_mean"] == pytest.approx(np.mean(np.abs(y - meta["target_mean"])), rel=1e-5)
    assert json.loads(out.read_text())["mae"] == ev["mae"] and (tmp_path / "eval" / "test_parity.png").exists()
    # evaluate on explicit DATA (SET:PART), last-epoch weights (epoch 2 = best here: same numbers)
    assert main(["evaluate", str(run), "jarvis_supercon:val", "--which", "last", "--json"]) == 0
    ev_val = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev_val["n"] == 105 and ev_val["mae"] > 0

    # predict: a CIF written from the first test structure gives the stored prediction
    from difcrys import io

    path = tmp_path / "s0.cif"
    io.write(path, te.crystals[0])
    assert main(["predict", str(run), str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["units"] == "K" and rows[0]["tc_k"] == pytest.approx(p[0], rel=1e-4, abs=1e-4)

    # bad input: an element outside the feature table (Md, Z = 101) is a clear error, exit status 2
    bad = tmp_path / "POSCAR"
    bad.write_text("bad\n1.0\n4 0 0\n0 4 0\n0 0 4\nMd O\n1 1\nDirect\n0 0 0\n0.5 0.5 0.5\n")
    assert main(["predict", str(run), str(bad)]) == 2
    assert "101" in capsys.readouterr().err


def test_property_config_errors(tmp_path):
    from difcrys.train.property import load_property_data, property_config_from_dict, train_property_config

    base = {"task": "property", "data": {"target": "tc_k", "train": "jarvis_supercon:train"},
            "model": {"name": "cgcnn"}, "train": {"epochs": 1}}
    with pytest.raises(ConfigError, match="section"):
        train_property_config({**base, "optimizer": {}}, tmp_path)
    with pytest.raises(ConfigError, match="learning_rate"):
        property_config_from_dict({**base, "train": {"learning_rate": 0.1}})
    with pytest.raises(ConfigError, match="data.target"):
        property_config_from_dict({**base, "data": {"train": "x"}})
    with pytest.raises(ConfigError, match="train.lr"):
        property_config_from_dict({**base, "train": {"lr": "fast"}})
    with pytest.raises(ConfigError, match="n_conv"):
        property_config_from_dict({**base, "model": {"name": "cgcnn", "n_conv": 0}})
    with pytest.raises(ConfigError, match="model"):
        property_config_from_dict({**base, "model": {"name": "schnet"}})
    with pytest.raises(ConfigError, match="not 'property'"):
        train_property_config({**base, "task": "potential"}, tmp_path)
    require_data("jarvis_supercon", "val.csv")  # the checks below read the data set
    with pytest.raises(ConfigError, match="ids_key"):
        load_property_data({"set": "jarvis_supercon", "part": "val", "ids_file": "x.json"})
    with pytest.raises(ConfigError, match="unknown key"):
        load_property_data({"set": "jarvis_supercon", "part": "val", "rows": 3})
    # a resolved config gives exactly the PropertyConfig of the experiment settings
    pc = property_config_from_dict({**base, "model": {"name": "equivariant", "n_scalars": 8, "k": 10},
                                    "train": {"lr": "2e-3", "batch_size": 16}})
    assert (pc.model, pc.model_kwargs, pc.k, pc.lr, pc.batch_size) == ("equivariant", {"n_scalars": 8}, 10, 2e-3, 16)


def test_saved_split_file_selects_ids(tmp_path):
    require_data("jarvis_supercon", "val.csv")
    from difcrys.data import load_shared
    from difcrys.train.property import load_property_data

    full = load_shared("jarvis_supercon", "val")
    pick = [full.ids[7], full.ids[2], full.ids[40]]
    (tmp_path / "split.json").write_text(json.dumps({"a": pick, "b": ["nope"]}))
    ds = load_property_data({"set": "jarvis_supercon", "part": "val", "ids_file": "split.json", "ids_key": "a"},
                            tmp_path)
    assert ds.ids == pick
    np.testing.assert_allclose(ds.properties["tc_k"], full.properties["tc_k"][[7, 2, 40]])
    with pytest.raises(ConfigError, match="not in"):
        load_property_data({"set": "jarvis_supercon", "part": "val", "ids_file": "split.json", "ids_key": "b"},
                           tmp_path)


def test_mp20_saved_split_is_disjoint_and_complete():
    require_data("mp_20_xrd_subset", "test_subset.csv")
    split = json.loads((ROOT / "experiments" / "property" / "splits" / "mp_20_subset_split.json").read_text())
    a, b, c = (set(split[k]) for k in ("train", "val", "test"))
    assert (len(a), len(b), len(c)) == (904, 113, 113) and not (a & b or a & c or b & c)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_property_config_test_variant_trains(cfg, tmp_path):
    from difcrys.train.config import load_yaml
    from difcrys.train.property import evaluate_property_run, train_property_config

    d = load_yaml(cfg)
    assert d["task"] == "property"
    res = train_property_config(cfg, tmp_path / "run", variant="test", log=None)
    assert res["epochs"] == 2 and np.isfinite(res["test_mae"])
    ev = evaluate_property_run(tmp_path / "run")
    assert ev["mae"] == pytest.approx(res["test_mae"], rel=1e-5)
