"""What ``sciprune run`` and ``sciprune sweep`` share about a study: its checks, its networks and
tasks, their metrics, the results' attributes and the held output folder.

:func:`check_case` checks what the case schema cannot before any work; :func:`held_study` takes the
output folder (:mod:`sciprune.study_lock`) and fingerprints the data (:mod:`sciprune.fingerprint`);
:func:`load_task`, :func:`make_model` and :func:`train_config` build a block's task, network and
training settings; :func:`evaluate` gives the metrics (regression errors in physical units);
:func:`study_attrs` and :func:`case_hash` say what a results file was computed from.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .config import Case, ModelSpec, TrainSpec
from .devices import resolve_device
from .engine import check_cubic_fits
from .errors import ConfigError, SciPruneError
from .fingerprint import Fingerprint, HashCache, data_fingerprint
from .models import MLP, lenet_300_100
from .outputs import prepare_output
from .results import versions
from .study_lock import HASH_CACHE_NAME, open_study
from .tasks import LoadedTask, build_task, ensure_data
from .training import TrainConfig

__all__ = ["check_case", "check_networks", "held_study", "check_training_lengths", "study_variants", "study_diagnostics", "study_lines", "rewind_hooks", "train_config", "make_model", "evaluate", "predict_field", "load_task",
           "scratch_spec", "weight_count", "study_attrs", "case_hash", "REGRESSION_METRICS", "CLASSIFICATION_METRICS"]

REGRESSION_METRICS = ("test_mse", "test_mse_clean", "test_rel_l2_clean", "field_nrmse", "train_mse")
CLASSIFICATION_METRICS = ("test_loss", "test_accuracy", "train_loss")


def check_case(case: Case, *, local: bool = True) -> None:
    """Checks beyond the case schema, made before any run starts; a :class:`ConfigError` naming the key.

    (Methods, ratios and options are already checked by :func:`sciprune.config.load_case`.) With
    ``local=False`` (a cluster computes) the device is not checked here but on the workers.
    """
    d = case.data
    if d.kind == "pdebench":
        if not Path(d.file).exists():
            if d.generate is None:  # (a sample [data.generate] does not make is refused by DataSpec)
                raise ConfigError(f"data.file: {d.file} does not exist and the case has no [data.generate] "
                                  "section to make it; fix the path or add [data.generate]")
        elif not Path(d.file).is_file():
            raise ConfigError(f"data.file: {d.file} is not a file")
    elif d.source != "digits" and not Path(d.source).exists():
        raise ConfigError(f"data.source: {d.source}: no such file or directory; give 'digits', a folder of IDX "
                          "files or a .h5/.hdf5 file")
    if local:
        resolve_device(case.device)
    if not case.models:
        raise ConfigError("model: the case has no architecture")
    lobsters = [name for name, spec in case.prune.procedures.items() if spec.lobster is not None]
    if lobsters and d.val_fraction == 0:
        raise ConfigError(f"prune.procedures.{lobsters[0]}.lobster: LOBSTER's plateau test and bisection need the "
                          "task's validation split, and data.val_fraction = 0; set data.val_fraction > 0")
    if d.kind != "pdebench" or Path(d.file).is_file():
        check_training_lengths(case)  # a file still to be generated is checked once made, before any training
    check_networks(case)


def check_networks(case: Case) -> None:
    """Each method that limits the networks it takes (a criterion's ``check_network``, e.g. whole-network
    ``obs``) accepts every architecture of ``case`` with its options, checked on the untrained networks
    (on the meta device: no memory) before any training; the task's input and output sizes come from
    the data (PDEBench: (x, t) -> u; a classification source is read)."""
    from .criteria import get

    p = case.prune
    checks = {}  # (method, its options in one variant) -> the criterion's check; a procedure's own options
    for label, m, _ in p.variants:
        if get(m).check_network is not None:
            opts = p.procedure(label).criterion_options(p.options, m)
            where = f"prune.procedures.{label}" if label in p.procedures else "prune.methods"
            checks.setdefault((m, json.dumps(opts, sort_keys=True)), (where, m, opts, get(m).check_network))
    if not checks:
        return
    if case.data.kind == "pdebench":
        n_in, n_out = 2, 1
    else:
        task = build_task(case.data, noise_kind="none", noise_level=0.0, seed=case.seeds[0], dtype=torch.float32).task
        n_in, n_out = task.in_features, task.out_features
    for arch, spec in case.models.items():
        model = make_model(spec, n_in, n_out, 0, device="meta", dtype=torch.float32)
        for where, method, opts, check in checks.values():
            try:
                check(model, opts)
            except SciPruneError as err:
                raise ConfigError(f"{where}: {method} on architecture {arch!r}: {err}") from None


def check_training_lengths(case: Case, n_train: int | None = None) -> None:
    """Steps that must fall inside a training: a cubic schedule's last mask update (in the fine-tuning,
    or in the training from the initial weights) and a rewinding step k (in the dense training). Both
    depend on the training set's size ``n_train``; when it is not given the task's split is built (no
    noise) if some variant needs it."""
    from .engine import check_procedure
    from .lottery_rewind import check_rewind_step

    procs = {label: case.prune.procedure(label) for label, _, _ in case.prune.variants}
    scheds = {label: check_procedure(p, case.prune.schedule, where=f"prune.procedures.{label}")
              for label, p in procs.items()}
    if not any(s.name == "cubic" for s in scheds.values()) and not any(p.rewind for p in procs.values()):
        return
    if n_train is None:
        task = build_task(case.data, noise_kind="none", noise_level=0.0, seed=case.seeds[0], dtype=torch.float32).task
        n_train = int(task.X_train.shape[0])
    n = n_train
    train, finetune = train_config(case.train, case.seeds[0]), train_config(case.finetune, case.seeds[0])
    for label, proc in procs.items():
        where = "prune.schedule" if label not in case.prune.procedures else f"prune.procedures.{label}"
        try:
            if proc.rewind is not None:
                check_rewind_step(proc.rewind, train, n)
            check_cubic_fits(scheds[label], train if proc.start == "init" else finetune, n)
        except SciPruneError as err:
            raise ConfigError(f"{where}: {str(err).removeprefix('prune.schedule: ')}") from None


def study_variants(case: Case) -> list:
    """Every pruned network of a block of ``case``: each variant (methods, their shift variants, the
    procedures) at each ratio, as :class:`sciprune.engine.Variant` with its procedure."""
    from .engine import Variant

    p = case.prune
    return [Variant(label, method, comp, r, p.procedure(label)) for label, method, comp in p.variants for r in p.ratios]


def study_diagnostics(case: Case, model, task, seed: int) -> dict:
    """The ``[diagnostics]`` of ``case`` measured on ``model`` (:mod:`sciprune.study_diagnostics`); {} when
    the case asks for none."""
    d = case.diagnostics
    if not d.enabled:
        return {}
    from .study_diagnostics import network_diagnostics

    return network_diagnostics(model, task, hessian_top=d.hessian_top, psp=d.psp, kfac=d.kfac, inference=d.inference,
                               seed=seed)


def study_lines(case: Case, outcomes, task) -> dict[tuple[str, str, float], dict[str, list[float]]]:
    """``[diagnostics] lines``: for each pair ``(a, b)`` and ratio whose two final networks are among
    ``outcomes``, the training and test loss along the straight line from a's to b's
    (:func:`sciprune.diagnostics.loss_line`): ``{(a, b, ratio): {"train": [...], "test": [...]}}``."""
    if not case.diagnostics.lines:
        return {}
    from .diagnostics import loss_line

    by = {(o.variant.label, o.variant.ratio): o.model for o in outcomes}
    out = {}
    for a, b in case.diagnostics.pairs:
        for r in case.prune.ratios:
            if (a, r) in by and (b, r) in by:
                ds = loss_line(by[(a, r)], by[(b, r)], (task.X_train, task.Y_train), n_points=case.diagnostics.line_points,
                               test_data=(task.X_test, task.Y_test))
                out[(a, b, r)] = {"train": [float(v) for v in ds["train_loss"].values],
                                  "test": [float(v) for v in ds["test_loss"].values]}
    return out


def rewind_hooks(case: Case) -> dict:
    """``{k: sciprune.Rewind(k)}`` for every step k > 0 a procedure of ``case`` rewinds to: hooks of the dense
    training that keep its weights there (k = 0, the initial weights, are rebuilt from the seed)."""
    from .lottery_rewind import Rewind

    steps = sorted({case.prune.procedure(label).rewind or 0 for label, _, _ in case.prune.variants} - {0})
    return {k: Rewind(k) for k in steps}


def train_config(spec: TrainSpec, seed: int) -> TrainConfig:
    return TrainConfig(**spec.model_dump(), seed=seed)


def make_model(spec: ModelSpec, in_features: int, out_features: int, seed: int, *, device, dtype) -> MLP:
    """The network of ``spec`` for a task's input and output sizes, initialised from ``seed``."""
    if spec.kind == "lenet-300-100":
        model = lenet_300_100(in_features, out_features, seed=seed)
    else:
        model = MLP(in_features, spec.widths, out_features, spec.activation, seed=seed)
    return model.to(device=device, dtype=dtype)


@torch.no_grad()
def _predict(model, X: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    model.eval()
    return torch.cat([model(X[s : s + chunk]) for s in range(0, X.shape[0], chunk)])


@torch.no_grad()
def predict_field(model, loaded: LoadedTask) -> np.ndarray:
    """u(x, t) of ``model`` on the whole grid in physical units, shape (Nt, Nx)."""
    t = loaded.task
    p = next(model.parameters())
    Xg = torch.as_tensor(t.input_scaling.forward(loaded.grid_inputs), dtype=p.dtype, device=p.device)
    out = t.output_scaling.inverse(_predict(model, Xg).double().cpu().numpy())
    return out.reshape(loaded.clean_field.shape)


@torch.no_grad()
def evaluate(model, loaded: LoadedTask) -> dict[str, float]:
    """Test and training metrics; regression errors are in physical units."""
    import torch.nn.functional as F

    t = loaded.task
    if t.task == "classification":
        logits = _predict(model, t.X_test)
        return {
            "test_loss": float(F.cross_entropy(logits, t.Y_test)),
            "test_accuracy": float((logits.argmax(1) == t.Y_test).double().mean()),
            "train_loss": float(F.cross_entropy(_predict(model, t.X_train), t.Y_train)),
        }
    inv = t.output_scaling.inverse
    pred = inv(_predict(model, t.X_test).double())
    noisy, clean = inv(t.Y_test.double()), inv(t.Y_test_clean.double())
    train_pred = inv(_predict(model, t.X_train).double())
    from .metrics import nrmse_field

    return {
        "test_mse": float(((pred - noisy) ** 2).mean()),
        "test_mse_clean": float(((pred - clean) ** 2).mean()),
        "test_rel_l2_clean": float(torch.linalg.vector_norm(pred - clean) / torch.linalg.vector_norm(clean)),
        "field_nrmse": nrmse_field(predict_field(model, loaded), loaded.clean_field),
        "train_mse": float(((train_pred - inv(t.Y_train.double())) ** 2).mean()),
    }


def study_attrs(case: Case, case_path: str | None, *, wall_time_s: float, device, data: Fingerprint) -> dict:
    """The attributes of a study's results file: resolved case, its hash, units, versions, wall time,
    device, and the content hash of the data the results were computed from (``data_sha256``, with
    what was hashed in ``data_fingerprint``), shared by ``sciprune run`` and ``sciprune sweep``."""
    return {
        "case": json.loads(case.model_dump_json()), "case_file": str(case_path) if case_path else "",
        "case_hash": case_hash(case), "task": "regression" if case.data.kind == "pdebench" else "classification",
        "units": "errors in the physical units of u" if case.data.kind == "pdebench" else "cross-entropy (nats), accuracy (fraction)",
        "versions": versions(), "wall_time_s": round(wall_time_s, 3), "device": str(device),
        "data_sha256": data.sha256, "data_fingerprint": data.detail,
        **({"field_rms": r} if (r := field_rms(case)) is not None else {}),
    }


def field_rms(case: Case) -> float | None:
    """sqrt(mean(u^2)) of the clean field the regression targets come from (physical units), for the
    report's signal-to-noise axis; None for classification."""
    if case.data.kind != "pdebench":
        return None
    from .data.pdebench import open_pdebench

    with open_pdebench(case.data.file) as f:
        u = np.asarray(f.sample(case.data.sample).values, dtype=np.float64)
    return float(np.sqrt(np.mean(u ** 2)))


def load_task(case: Case, level: float, seed: int, *, device, dtype) -> LoadedTask:
    """The task of one (noise level, seed) of ``case`` on ``device`` in ``dtype``."""
    return build_task(case.data, noise_kind=case.noise.kind, noise_level=level, seed=seed, dtype=dtype).to(device, dtype)


def weight_count(model) -> int:
    """Number of Linear weights (biases excluded): the count pruning ratios refer to."""
    return int(sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight")))


def scratch_spec(dense, in_features: int, out_features: int, ratio: float) -> tuple[ModelSpec, int]:
    """A dense network of ``dense``'s depth and activation keeping about ``(1 - ratio)`` of its weights
    (:func:`sciprune.models.scaled_widths`): its spec and its weight count."""
    from .models import describe, n_weights, scaled_widths

    arch = describe(dense)
    widths = scaled_widths(in_features, arch["sizes"][1:-1], out_features, round((1 - ratio) * n_weights(arch["sizes"])))
    return ModelSpec(kind="mlp", widths=widths, activation=arch["activation"]), n_weights([in_features, *widths, out_features])


def case_hash(case: Case) -> str:
    """Hash of everything in a case that changes results (not the output folder or the device)."""
    import hashlib

    d = json.loads(case.model_dump_json())
    for key in ("output", "device", "save_models", "name"):
        d.pop(key, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def held_study(case: Case, *, command: str, wait: bool, echo: Callable[[str], None]) -> Iterator[tuple[Path, Fingerprint]]:
    """The output folder of ``case`` checked, created and held by this process (``run`` and ``sweep``),
    with its data file made complete and fingerprinted: yields ``(output folder, data fingerprint)``."""
    out = prepare_output(case.output, is_dir=True, what="output")
    with open_study(out, name=case.name, case_hash=case_hash(case), command=command, wait=wait, echo=echo):
        if ensure_data(case.data):
            echo(f"generated {case.data.file}")
        cache = HashCache(out / HASH_CACHE_NAME)
        data = data_fingerprint(case.data, cache=cache)
        cache.save()
        yield out, data
