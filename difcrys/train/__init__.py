"""Generic training machinery (optax loop, EMA, LR plateau decay, early stopping, checkpoints,
metrics, data parallelism) and task-specific trainers.

Submodules are imported on demand (no eager imports)::

    from difcrys.train.loop import TrainConfig, Task, fit
    from difcrys.train.config import load_yaml
    from difcrys.train.potential import train_potential, evaluate_run, load_run
"""
