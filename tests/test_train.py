"""Training machinery: a generic task converges, interrupted runs resume exactly (≤ 1 epoch lost),
data parallelism over forced host devices equals single-device training, the tiny potential
config trains and reloads, bad data and configs raise clear errors."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difcrys.crystal import Crystal
from difcrys.data import Dataset
from difcrys.data._common import DatasetError
from difcrys.errors import ConfigError, ElementError
from difcrys.train.loop import TrainConfig, fit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LinearTask:
    """Least squares ``y = X w`` with a known solution: a model-free check of the loop."""

    val_metric = "mse"

    def __init__(self, batch_size=8, n=64, seed=0):
        rng = np.random.default_rng(seed)
        self.w_true = rng.standard_normal(3)
        self.X = rng.standard_normal((n, 3))
        self.y = self.X @ self.w_true
        self.bs = batch_size

    def init(self, key):
        return {"w": jnp.zeros(3)}

    def train_batches(self, epoch):
        perm = np.random.default_rng([1, epoch]).permutation(len(self.y))
        for s in range(0, len(perm), self.bs):
            i = perm[s:s + self.bs]
            yield {"x": self.X[i], "y": self.y[i]}

    def val_batches(self):
        yield {"x": self.X, "y": self.y}

    def loss_weights(self, epoch):
        return {"scale": 1.0}

    def loss(self, params, batch, weights):
        r = batch["x"] @ params["w"] - batch["y"]
        mse = jnp.mean(r ** 2)
        return weights["scale"] * mse, {"mse": mse}

    def evaluate(self, params, batches):
        b = next(iter(batches))
        return {"mse": float(np.mean((b["x"] @ np.asarray(params["w"]) - b["y"]) ** 2))}


CFG = dict(epochs=6, batch_size=8, lr=0.05, ema_decay=0.5, progress=False, verbose=False,
           early_stopping_patience=None)


def test_generic_fit_converges_and_logs(tmp_path):
    task = LinearTask()
    res = fit(task, TrainConfig(**{**CFG, "epochs": 30}), str(tmp_path))
    np.testing.assert_allclose(np.asarray(res.params["w"]), task.w_true, atol=0.05)
    lines = [json.loads(s) for s in open(tmp_path / "metrics.jsonl")]
    assert [r["epoch"] for r in lines] == list(range(1, 31))
    assert lines[-1]["val_mse"] < 1e-2 * lines[0]["val_mse"]


def test_interrupted_run_resumes_exactly(tmp_path):
    task = LinearTask()
    cfg = TrainConfig(**CFG)
    ref = fit(task, cfg, str(tmp_path / "ref"))

    class Kill(Exception):
        pass

    def killer(epoch, step):
        if epoch == 3 and step == 3 * 8 + 2:  # in the middle of the 4th epoch
            raise Kill

    with pytest.raises(Kill):
        fit(task, cfg, str(tmp_path / "run"), callback=killer)
    lines = [json.loads(s) for s in open(tmp_path / "run" / "metrics.jsonl")]
    assert lines[-1]["epoch"] == 3  # three complete epochs were checkpointed; ≤ 1 epoch lost
    res = fit(task, cfg, str(tmp_path / "run"))
    assert res.epoch == 6 and [h["epoch"] for h in res.history] == [4, 5, 6]
    np.testing.assert_allclose(np.asarray(res.last_params["w"]), np.asarray(ref.last_params["w"]), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(res.params["w"]), np.asarray(ref.params["w"]), rtol=1e-12)



@pytest.mark.slow
def test_sigkilled_run_resumes_losing_at_most_one_epoch(tmp_path):
    """A training process killed with SIGKILL in the middle of an epoch (no Python cleanup) leaves
    a readable checkpoint of its last complete epoch; resuming reproduces the uninterrupted run."""
    import signal

    run = str(tmp_path / "run")
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
        import jax
        jax.config.update("jax_enable_x64", True)
        from test_train import LinearTask, CFG
        from difcrys.train.loop import TrainConfig, fit

        def hang(epoch, step):
            if epoch == 3 and step == 3 * 8 + 2:   # middle of the 4th epoch
                print("KILLME", flush=True)
                time.sleep(600)
        fit(LinearTask(), TrainConfig(**CFG), {run!r}, callback=hang)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    try:
        line = p.stdout.readline()
        assert line.strip() == "KILLME", p.stderr.read()[-2000:]
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGKILL
    lines = [json.loads(s) for s in open(os.path.join(run, "metrics.jsonl"))]
    assert [r["epoch"] for r in lines] == [1, 2, 3]  # the partial 4th epoch is the only loss
    ref = fit(LinearTask(), TrainConfig(**CFG), str(tmp_path / "ref"))
    res = fit(LinearTask(), TrainConfig(**CFG), run)
    assert [h["epoch"] for h in res.history] == [4, 5, 6]
    np.testing.assert_allclose(np.asarray(res.last_params["w"]), np.asarray(ref.last_params["w"]), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(res.params["w"]), np.asarray(ref.params["w"]), rtol=1e-12)

def test_plateau_decay_and_early_stopping(tmp_path):
    task = LinearTask()
    task.y = np.zeros_like(task.y)  # solution w = 0 = init: never improves after epoch 1
    res = fit(task, TrainConfig(**{**CFG, "epochs": 50, "plateau_patience": 2, "plateau_factor": 0.5,
                                   "early_stopping_patience": 6}), str(tmp_path))
    assert res.stopped == "early_stopping" and res.epoch == 7
    lrs = [h["lr"] for h in res.history]
    assert lrs[-1] == pytest.approx(0.05 * 0.5 ** 3)


def test_cosine_anneal_of_a_resumed_run(tmp_path):
    """A run resumed with ``anneal_start_epoch`` at its stopping epoch follows the cosine LR formula
    (not the plateau decay, which would halve it every epoch here), and at the final LR the
    parameters stop moving: the anneal reaches the optimiser, not only the log."""
    import math

    from difcrys.train.loop import annealed_lr

    task = LinearTask()
    task.y = task.y + 0.3 * np.random.default_rng(5).standard_normal(task.y.shape)  # noisy: never exact
    base = {**CFG, "epochs": 3, "plateau_patience": 10**6}
    fit(task, TrainConfig(**base), str(tmp_path))
    cfg = TrainConfig(**{**base, "epochs": 9, "plateau_patience": 1, "anneal_epochs": 4,
                         "anneal_start_epoch": 3, "anneal_final_lr": 1e-12})
    res = fit(task, cfg, str(tmp_path))
    lrs = [h["lr"] for h in res.history]
    want = [1e-12 + 0.5 * (0.05 - 1e-12) * (1 + math.cos(math.pi * min(t / 4, 1.0))) for t in range(6)]
    np.testing.assert_allclose(lrs, want, rtol=1e-12, atol=1e-15)
    assert annealed_lr(cfg, 2) is None and annealed_lr(cfg, 5) == pytest.approx(0.025, rel=1e-9)
    before = np.asarray(res.last_params["w"]).copy()
    more = fit(task, TrainConfig(**{**cfg.__dict__, "epochs": 11}), str(tmp_path))
    assert np.max(np.abs(np.asarray(more.last_params["w"]) - before)) < 1e-9
    with pytest.raises(ConfigError, match="anneal_final_lr"):
        TrainConfig(**{**base, "anneal_epochs": 4, "anneal_final_lr": 1.0})
    with pytest.raises(ConfigError, match="anneal_epochs"):
        TrainConfig(**{**base, "anneal_epochs": 0})


def test_data_parallel_forced_host_devices(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, json
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
        import jax
        jax.config.update("jax_enable_x64", True)
        import numpy as np
        from test_train import LinearTask, CFG
        from difcrys.train.loop import TrainConfig, fit
        assert len(jax.devices()) == 2
        out = {{}}
        for d in (1, 2):
            r = fit(LinearTask(), TrainConfig(**{{**CFG, "devices": d}}), os.path.join({str(tmp_path)!r}, str(d)))
            out[d] = np.asarray(r.last_params["w"]).tolist()
        print(json.dumps(out))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["2"], out["1"], rtol=1e-10)
    with pytest.raises(ConfigError, match="multiple of train.devices"):
        TrainConfig(batch_size=3, devices=2)


# ------------------------------------------------------------------ potential trainer
def _toy_dataset(n=6, nan=False, bad_forces=False, numbers=(14, 14)):
    rng = np.random.default_rng(0)
    cs, es, fs = [], [], []
    for k in range(n):
        frac = np.array([[0, 0, 0], [0.25, 0.25, 0.25]]) + 0.02 * rng.standard_normal((2, 3))
        cs.append(Crystal.create(list(numbers), frac, np.eye(3) * 3.0 + 0.5 * (1 - np.eye(3))))
        es.append(-10.0 + 0.1 * k)
        fs.append(rng.standard_normal((3 if bad_forces and k == 2 else 2, 3)))
    if nan:
        es[3] = np.nan
    return Dataset(cs, energy=es, forces=fs, name="toy")


def test_bad_data_errors():
    from difcrys.nn.potential import Potential, PotentialConfig
    from difcrys.train.potential import LossConfig, PotentialTask

    with pytest.raises(DatasetError, match="NaN"):
        _toy_dataset(nan=True)
    with pytest.raises(DatasetError, match="forces have shape"):
        _toy_dataset(bad_forces=True)
    with pytest.raises(DatasetError, match="empty"):
        Dataset([], name="empty")
    pot = Potential(PotentialConfig(species=["Si"], cutoff=3.0, channels=2, num_layers=1, l_max=1))
    ds = _toy_dataset()
    no_f = Dataset(ds.crystals, energy=ds.energy, name="noforces")
    cfg = TrainConfig(epochs=1, batch_size=2)
    with pytest.raises(DatasetError, match="no forces"):
        PotentialTask(pot, no_f, ds, LossConfig(), cfg)
    with pytest.raises(ElementError, match="Ge"):
        PotentialTask(pot, _toy_dataset(numbers=(14, 32)), ds, LossConfig(), cfg)
    with pytest.raises(ConfigError, match="loss.forces"):
        LossConfig(forces=(1.0, -1.0))


def test_config_errors(tmp_path):
    from difcrys.train.config import load_yaml
    from difcrys.train.potential import train_potential

    cfg = os.path.join(ROOT, "configs", "mlearn_Si.yaml")
    with pytest.raises(ConfigError, match="unknown variant"):
        load_yaml(cfg, "huge")
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="unknown option"):
        train_potential(cfg, str(tmp_path / "r"), variant="test", overrides={"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="unknown config section"):
        train_potential(cfg, str(tmp_path / "r"), overrides={"modle": {}})


@pytest.mark.slow
def test_tiny_potential_config_trains_and_reloads(tmp_path):
    from conftest import require_data
    from difcrys.data import load_shared
    from difcrys.md.calculator import DifcrysCalculator
    from difcrys.train.potential import evaluate_run, load_run, train_potential

    require_data("mlearn_zuo2020", "Si_train.xyz")
    run = str(tmp_path / "si")
    s = train_potential(os.path.join(ROOT, "configs", "mlearn_Si.yaml"), run, variant="test",
                        overrides={"train": {"epochs": 4, "lr": 0.02},
                                                                    "loss": {"energy": 1.0, "forces": 1.0}})
    lines = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl"))]
    assert len(lines) == 4 and lines[-1]["val_loss"] < lines[0]["val_loss"]
    assert os.path.isfile(os.path.join(run, "config.yaml"))
    # fitted per-species shift ≈ mean DFT energy per atom of the training frames
    ds = load_shared("mlearn_zuo2020", "Si_train")
    pot, params = load_run(run)
    assert pot.config.shift[0] == pytest.approx(np.mean(ds.energy[:10] / ds.n_atoms[:10]), abs=0.05)
    # the reloaded model reproduces the run's own test evaluation
    m = evaluate_run(run, {"set": "mlearn_zuo2020", "part": "Si_test", "max_structures": 4}, plot=False)
    assert m["energy_mae_per_atom_eV"] == pytest.approx(s["test"]["Si_test"]["energy_mae_per_atom_eV"], rel=1e-6)
    # and plugs into ASE
    atoms = __import__("difcrys.io", fromlist=["to_ase"]).to_ase(ds.crystals[0])
    atoms.calc = DifcrysCalculator.from_run(run)
    assert np.isfinite(atoms.get_potential_energy())


@pytest.mark.parametrize("name", ["mlearn_Si", "mlearn_Ge", "mlearn_Li", "mlearn_Mo", "mlearn_Ni", "mlearn_Cu",
                                  "mlearn_Si_dpmd", "acac", "ethanol"])
def test_shipped_configs_validate(name):
    from difcrys.nn.potential import PotentialConfig
    from difcrys.train.config import dataclass_from_dict, load_yaml
    from difcrys.train.potential import LossConfig

    for variant in (None, "test"):
        d = load_yaml(os.path.join(ROOT, "configs", f"{name}.yaml"), variant)
        dataclass_from_dict(TrainConfig, d["train"], "train")
        dataclass_from_dict(LossConfig, d["loss"], "loss")
        PotentialConfig.from_dict(d["model"])
        assert "train" in d["data"] and d["data"]["test"]


def test_checkpoints_are_orbax_and_legacy_msgpack_still_loads(tmp_path):
    """Checkpoints are orbax steps (readable with orbax's own manager, two kept); a run folder from
    before orbax (flax msgpack files) still restores into the same structure."""
    import orbax.checkpoint as ocp
    from flax import serialization

    from difcrys.train import checkpoint as ck

    task = LinearTask()
    res = fit(task, TrainConfig(**CFG), str(tmp_path / "run"))
    mgr = ocp.CheckpointManager(str(tmp_path / "run" / "checkpoints"))
    assert mgr.all_steps() == [5, 6] and mgr.latest_step() == 6
    raw = mgr.restore(6, args=ocp.args.StandardRestore())
    np.testing.assert_array_equal(raw["params"]["w"], np.asarray(res.last_params["w"]))
    assert int(raw["epoch"]) == 6
    best = ck.restore(str(tmp_path / "run"), ck.BEST, task.init(jax.random.PRNGKey(1)))
    np.testing.assert_array_equal(np.asarray(best["w"]), np.asarray(res.params["w"]))
    # legacy folder: best.msgpack written with flax.serialization
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "best.msgpack").write_bytes(serialization.to_bytes(jax.device_get(res.params)))
    old = ck.restore(str(legacy), ck.BEST, task.init(jax.random.PRNGKey(1)))
    np.testing.assert_array_equal(np.asarray(old["w"]), np.asarray(res.params["w"]))
    with pytest.raises(ConfigError, match="no checkpoints checkpoint"):
        ck.restore(str(legacy), ck.CHECKPOINT, None)


def test_fresh_run_in_an_old_folder_replaces_its_checkpoints(tmp_path):
    """resume=False in a folder holding a longer run: the old run's higher epoch numbers must not
    stay the 'latest' checkpoint, and the metrics log starts again."""
    from difcrys.train import checkpoint as ck

    task = LinearTask()
    run = str(tmp_path / "run")
    fit(task, TrainConfig(**{**CFG, "epochs": 6}), run)
    short = fit(task, TrainConfig(**{**CFG, "epochs": 2, "lr": 0.01}), run, resume=False)
    assert ck.latest_step(run, ck.CHECKPOINT) == 2 and ck.latest_step(run, ck.BEST) <= 2
    state = ck.restore(run, ck.CHECKPOINT)
    np.testing.assert_array_equal(state["params"]["w"], np.asarray(short.last_params["w"]))
    lines = [json.loads(s) for s in open(os.path.join(run, "metrics.jsonl"))]
    assert [r["epoch"] for r in lines] == [1, 2]
