"""The ``[prune]`` section of a case file: methods, ratios, schedule, the steps kept, and the
``[prune.procedures.NAME]`` tables, named variants with a procedure of their own.

Each table becomes one more value of the results' ``method`` coordinate, run at every ratio of
``prune.ratios`` (see :class:`sciprune.engine.Procedure` for what each key does)::

    [prune.procedures.lottery]          # iterative magnitude pruning, rewound to the initial weights
    method = "magnitude"
    schedule = { kind = "iterative", fraction = 0.2, budget_epochs = 0 }
    rewind = 0
    [prune.procedures.reinit]           # the lottery ticket's masks on new random weights
    control = "reinit"
    of = "lottery"
    [prune.procedures.gmp]              # gradual magnitude pruning during the training from scratch
    schedule = { kind = "cubic", n_updates = 20, every = 50 }
    start = "init"
    [prune.procedures.lobster]          # LOBSTER from scratch, thresholded on the validation split and
    lobster = { lam = 1e-4, twt = 0.05, pwe = 20 }      # capped at each ratio (sciprune.study_lobster)
    start = "init"
    [prune.procedures.qm-local]         # the same method with criterion options of its own, used at
    method = "qm"                       # every scoring step in place of [prune.options.qm]
    options = { locality = 1e-3 }
    [prune.procedures.hgnp]             # HGNP's Algorithm 2: neuron rounds with compaction, trained on F
    method = "hgnp"
    start = "init"
    rounds = { per_round = 20, pre_epochs = 10, between_epochs = 2, finetune_epochs = 20 }
    penalty = { mu = 1e-3, K = 0.0, refresh = 10 }
    options = { batch_size = 128, mu = 1e-3, K = 0.0 }
    [prune.procedures.hgnp-widths]      # the dense network of hgnp's final widths, from scratch
    control = "widths"
    of = "hgnp"
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_serializer, model_validator

from ._case_sections import _Bad, _Frozen, _short
from .errors import SciPruneError

__all__ = ["ProcedureSpec", "PruneSpec", "DRY_RUN_PROBES"]

#: The output-sensitivity criteria (``ec``, ``taylor-output``) draw ``probes`` random vectors per sample:
#: the load-time scoring of a one-weight network runs them up to this many, beyond it (where the cost
#: of that run grows) their values are checked by the criteria's ``check_probes`` alone.
DRY_RUN_PROBES = 64


def study_schedule(v) -> dict:
    """A case file's schedule table, checked (:func:`sciprune.schedules.parse_schedule`) and written back as
    its dict; ``final`` is refused: a study's cubic schedule ends at each of its ratios."""
    from .schedules import parse_schedule

    try:
        sched = parse_schedule(v)
    except SciPruneError as err:
        raise ValueError(str(err)) from None
    if getattr(sched, "final", None) is not None:
        raise ValueError("schedule final: a study's cubic schedule ends at each ratio; leave final unset")
    return sched.to_dict()


class ProcedureSpec(_Frozen):
    """One ``[prune.procedures.NAME]`` table (:class:`sciprune.engine.Procedure` plus the criterion)."""

    method: str = "magnitude"
    compensate: Optional[bool] = None
    schedule: Optional[dict] = None
    start: Literal["trained", "init"] = "trained"
    rewind: Optional[int] = Field(None, ge=0)
    control: Optional[Literal["reinit", "random-mask", "widths"]] = None
    of: Optional[str] = None
    lobster: Optional[dict] = None
    options: Optional[dict] = None
    rounds: Optional[dict] = None
    penalty: Optional[dict] = None

    @field_validator("lobster")
    @classmethod
    def _lobster(cls, v):
        from .study_lobster import lobster_problem

        problem = None if v is None else lobster_problem(v)
        if problem is not None:
            raise _Bad(problem[0], problem[1]) if problem[0] else ValueError(problem[1])
        return v

    @model_validator(mode="after")
    def _lobster_alone(self):
        given = sorted({"method", "compensate"} & self.model_fields_set)
        if self.lobster is not None and given:
            raise _Bad(given[0], f"{given[0]}: lobster prunes by its own thresholding, not by a criterion; remove it")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        """Without ``lobster`` or ``options`` when unset, so that the other procedures' results keys (and the
        case hash) stay what they were."""
        out = handler(self)
        for key in ("lobster", "options", "rounds", "penalty"):
            if getattr(self, key) is None:
                out.pop(key, None)
        return out

    @field_validator("method")
    @classmethod
    def _method(cls, v):
        from .criteria import available

        if v not in available():
            raise ValueError(f"unknown method {v!r}; available: {available()}")
        return v

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, v):
        return None if v is None else study_schedule(v)

    def procedure(self):
        """The :class:`sciprune.engine.Procedure` of this table."""
        from .engine import Procedure

        return Procedure(schedule=self.schedule, start=self.start, rewind=self.rewind, control=self.control,
                         of=self.of, lobster=None if self.lobster is None else dict(self.lobster),
                         options=None if self.options is None else dict(self.options),
                         rounds=None if self.rounds is None else dict(self.rounds),
                         penalty=None if self.penalty is None else dict(self.penalty))


class PruneSpec(_Frozen):
    """Which methods at which ratios; ``methods = ["all"]`` means every registered method.

    ``compensate``: methods also run with elimination-compensation bias shifts forced on (labelled
    ``<method>+shift``); ``no_compensate``: compensating methods also run without their shifts
    (``<method>-noshift``), so a study can separate better ranking from bias correction.
    ``snapshot_ratio``: the ratio whose fine-tuned networks are drawn in ``fields*.png`` (default:
    the highest). ``options.<method>``: the method's criterion options (``sciprune methods``).
    ``schedule``: a table ``{kind = "one-shot"}`` (default), ``{kind = "multi-step", steps = n,
    spacing = "linear" | "geometric"}`` (each ratio reached in n steps, re-scored at the partly pruned
    network, then fine-tuned), ``{kind = "iterative", fraction = f | levels = [...], budget_epochs = E}``
    (each level but the last followed by E epochs of training with the fine-tuning settings, the last by
    the fine-tuning) or ``{kind = "cubic", n_updates = n, every = dt, start_step = t0, initial = s_i}``
    (masks updated during the fine-tuning): :mod:`sciprune.schedules`, :mod:`sciprune.engine`.
    ``keep_steps``: ``"last"`` (default: the numbers after the last step only), ``"all"`` or a list of
    step numbers (from 1) whose metrics, sparsity and training loss go into the results as well.
    """

    methods: list[str] = Field(default_factory=lambda: ["all"], min_length=1)
    ratios: list[float] = Field(default_factory=lambda: [0.5, 0.8, 0.9], min_length=1)
    scope: Literal["global", "layer"] = "global"
    options: dict[str, dict] = Field(default_factory=dict)
    compensate: list[str] = Field(default_factory=list)
    no_compensate: list[str] = Field(default_factory=list)
    snapshot_ratio: Optional[float] = None
    procedures: dict[str, ProcedureSpec] = Field(default_factory=dict)
    schedule: dict = Field(default_factory=lambda: {"kind": "one-shot"})
    keep_steps: Union[Literal["last", "all"], list[int]] = "last"

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, v):
        return study_schedule(v)

    @field_validator("keep_steps", mode="before")
    @classmethod
    def _keep_steps(cls, v):
        from .schedules import check_keep_steps

        try:
            kept = check_keep_steps(v)
        except SciPruneError as err:
            raise ValueError(str(err)) from None
        return list(kept) if isinstance(kept, tuple) else kept

    @property
    def variants(self) -> list[tuple[str, str, Optional[bool]]]:
        """(label, method, compensate) for every run of a ratio: plain methods, then the variants."""
        out = [(m, m, None) for m in self.methods]
        out += [(f"{m}+shift", m, True) for m in self.compensate]
        out += [(f"{m}-noshift", m, False) for m in self.no_compensate]
        out += [(name, p.method, p.compensate) for name, p in self.procedures.items()]
        return out

    def procedure(self, label: str):
        """The :class:`sciprune.engine.Procedure` of the variant ``label`` (the default for methods)."""
        from .engine import Procedure

        p = self.procedures.get(label)
        return Procedure() if p is None else p.procedure()

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v):
        bad = [r for r in v if not (0 <= r < 1)]
        if bad:
            raise ValueError(f"ratios must be in [0, 1) (the fraction of weights removed), got {bad}")
        return sorted(set(v))

    @field_validator("methods", "compensate", "no_compensate")
    @classmethod
    def _methods(cls, v, info):
        from .criteria import available

        known = available()
        if info.field_name == "methods" and v == ["all"]:  # a case's ratios are fractions of weights
            from .criteria import all_methods

            return all_methods()
        unknown = [m for m in v if m not in known]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; available: {known}"
                             + (" or ['all']" if info.field_name == "methods" else ""))
        twice = sorted({m for m in v if v.count(m) > 1})
        if twice:
            raise ValueError(f"method(s) {twice} listed more than once; each would be run and written twice")
        if info.field_name == "compensate":
            from .criteria import is_joint

            joint = [m for m in v if is_joint(m)]
            if joint:
                raise ValueError(f"method(s) {joint} choose and compensate jointly (their own parameter updates); "
                                 "a '+shift' variant would equal the method itself: remove them from compensate")
        return v

    @model_validator(mode="after")
    def _options(self):
        from .outputs import check_name

        listed = set(self.methods) | set(self.compensate) | set(self.no_compensate)
        unknown = [m for m in self.options if m not in listed]
        if unknown:
            raise _Bad("options", f"prune.options names method(s) {unknown} that are not run by this case")
        labels = [label for label, _, _ in self.variants]
        for label in labels:
            check_name(label, "a method label")
        twice = sorted({x for x in labels if labels.count(x) > 1})
        if twice:
            raise ValueError(f"the labels {twice} would each be run twice")
        for method, options in self.options.items():
            _check_method_options(method, options)
        self._check_procedures()
        if self.snapshot_ratio is not None and self.snapshot_ratio not in self.ratios:
            raise _Bad("snapshot_ratio", f"prune.snapshot_ratio = {self.snapshot_ratio} is not one of "
                                         f"prune.ratios {self.ratios}")
        return self

    def _check_procedures(self) -> None:
        """Each ``[prune.procedures.NAME]``: a combination the study procedure can run, a control naming a
        variant of this case whose masks are made before its final training
        (:func:`sciprune.variants.check_procedure`, :func:`~sciprune.variants.masks_before_final_training`)."""
        from .schedules import parse_schedule
        from .variants import check_procedure, control_source_ok

        for name, spec in self.procedures.items():
            where = f"procedures.{name}"
            try:
                check_procedure(spec.procedure(), self.schedule, where=where)
            except SciPruneError as err:
                raise _Bad(where, str(err)) from None
            if spec.options is not None:
                _check_method_options(spec.method, spec.options, where=f"{where}.options")
            if spec.of is not None:
                ref = self.procedure(spec.of)
                known = spec.of in {label for label, _, _ in self.variants}
                if not known or not control_source_ok(
                        spec.control, ref, parse_schedule(ref.schedule if ref.schedule is not None else self.schedule)):
                    raise _Bad(f"{where}.of", f"of = {spec.of!r} must name a variant of this case " + (
                        "pruned in rounds (control 'widths' takes its final widths)" if spec.control == "widths" else
                        "whose masks are made before its final training (a method or a procedure that is not a "
                        "control, lobster, rounds or cubic schedule)"))


def _check_method_options(method: str, options: dict, *, where: str | None = None) -> None:
    """The criterion's options of ``method`` (the registry's names), then their values: a one-weight
    network is scored with them, through the same checks as the study's scoring after training.
    ``where``: the key named in an error (default ``options.<method>``)."""
    where = f"options.{method}" if where is None else where
    import torch

    from .criteria import get
    from .models import MLP
    from .pruning import score_result

    allowed = get(method).options  # the registry's list, as sciprune methods shows it
    extra = sorted(set(options) - set(allowed))
    if extra:  # score_result would also take names/seed/batch_size, which the study sets itself
        raise _Bad(where, f"unknown option(s) {extra} for method {method!r}; allowed: "
                          f"{', '.join(sorted(allowed)) or 'none'}")
    # a neuron method needs a hidden layer; a weight method is checked on one weight
    model = MLP(1, [2], 1, seed=0) if get(method).granularity == "neuron" else MLP(1, [], 1, seed=0)
    # two samples: one would make a layer's input Hessian singular (obs-layer with damp = 0)
    data = (torch.tensor([[0.5], [-0.25]]), torch.tensor([[0.25], [0.0]]))
    try:
        probes = options.get("probes")
        if isinstance(probes, int) and probes > DRY_RUN_PROBES:  # too costly to run: the ec family's own check
            from .criteria.ec import check_probes

            check_probes(probes, options.get("probe_distribution", "rademacher"))
        else:
            score_result(model, method, data, **options)
    except SciPruneError as err:
        raise _Bad(where, str(err)) from None
    except Exception as err:  # a criterion that does not check a value's type itself
        raise _Bad(where, f"invalid option value(s): {type(err).__name__}: {_short(err)}") from None
