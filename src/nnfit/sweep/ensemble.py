"""The ensemble of a sweep's members: one model that averages their answers.

Members were fitted on different splits (folds, bootstrap samples, seeds), so their input
statistics, vocabularies and target scaling differ: the ensemble runs every member on the raw
input through the member's own preprocessing and combines what they answer, never their raw
outputs. Classification takes the mean of the members' class probabilities, regression the
mean of their predictions in the target's original units.

On disk (:func:`write_ensemble`) an ensemble is one self-contained directory, a bundle of
kind ``ensemble``: ``model.safetensors`` holds member ``i``'s weights under ``members.{i}.``
(the ``state_dict`` of an ``nn.ModuleList`` named ``members``), ``model.json`` holds
``{"format", "nnfit_version", "kind": "ensemble", "combine": "mean", "members": [{"name",
<the member's Learner.meta()>}, ...]}`` and ``manifest.json`` their sizes and SHA-256.
:meth:`Ensemble.load` (``nnfit.load``, ``nnfit predict``, ``nnfit evaluate``) checks every
member's ``model.json`` as a single model's is checked (:data:`nnfit.io.validate.ENSEMBLE`)
and every tensor against the members' specs before any model is built; nothing is unpickled.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import __version__
from ..checkpoint import FORMAT_VERSION, load_state_dict_strict, tensors_from_bytes, tensors_to_bytes
from ..config import TrainConfig
from ..data.columns import column_name
from ..data.preprocess import Preprocessor
from ..data.read import read_table
from ..data.sources import as_source
from ..errors import CheckpointError, ConfigError, DataError
from ..files import MANIFEST, parse_json, read_bundle, read_manifest, write_files
from ..guards import check_finite_outputs
from ..io.model_dir import META_FILE, MODEL_FILE
from ..io.validate import ENSEMBLE, MAX_MEMBERS, members_disagree, validate
from ..io.weights import check_entries, check_finite_bytes, model_wants, read_header
from ..learner import Learner
from ..outputs import in_order
from ..tasks import ClassificationTask, RegressionTask, Task, task_from_dict
from ..trainer import Trainer

KIND = "ensemble"  # the manifest's kind: nnfit.load tells an ensemble from a model by it
COMBINE = "mean"


def _prefix(i: int) -> str:
    """Member ``i``'s tensors in ``model.safetensors``."""
    return f"members.{i}."


class Ensemble:
    """Trained members answering as one model: the mean of their class probabilities, or of
    their predictions in the target's units.

    It offers what a :class:`~nnfit.learner.Learner` offers for using a trained model
    (:meth:`predict`, :meth:`predict_proba`, :meth:`outputs`, :meth:`evaluate`,
    :attr:`classes`, :attr:`task`, :meth:`save`), so ``nnfit predict`` and ``nnfit evaluate``
    take its directory as they take a run's. Raw outputs are in member 0's output space
    (:meth:`outputs`): ``ensemble.task.decode(out)`` and ``ensemble.task.proba(out)`` give the
    ensemble's answers.

    Args:
        members: the trained members; each keeps its own preprocessing and task.
        names: one name per member (``seed-3``, ``fold-2``...), distinct.

    Attributes:
        members: the member Learners, in order.
        names: their names.

    Raises:
        ConfigError: no member, a name missing, empty or taken twice, more than
            :data:`~nnfit.io.validate.MAX_MEMBERS` members, or members that cannot be averaged
            (another task, class list, number of targets, target column or kind of input than
            member 0's; a custom loss), naming the member.

    Example:
        >>> import nnfit
        >>> x, y = np.random.rand(60, 3), np.arange(60) % 2
        >>> members = [nnfit.fit({"name": "mlp", "hidden": [4]}, x, y, epochs=1, quiet=True,
        ...                      seed=s) for s in (0, 1)]
        >>> ens = Ensemble(members, ["seed-0", "seed-1"])
        >>> p = np.mean([m.predict_proba(x) for m in members], axis=0)
        >>> bool(np.allclose(ens.predict_proba(x), p, atol=1e-6))
        True
    """

    def __init__(self, members: Sequence[Learner], names: Sequence[str]) -> None:
        members, names = list(members), list(names)
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        if len(members) > MAX_MEMBERS:
            raise ConfigError(f"an ensemble holds at most {MAX_MEMBERS} members, got {len(members)}")
        if len(names) != len(members):
            raise ConfigError(f"{len(names)} names for {len(members)} ensemble members")
        for i, name in enumerate(names):
            if not isinstance(name, str) or not 1 <= len(name) <= 1000:
                raise ConfigError(f"ensemble member {i}: its name must be a string of 1 to 1000 "
                                  f"characters, got {name!r:.60}")
        problem = members_disagree([{"name": n, **m.meta()} for n, m in zip(names, members, strict=True)])
        if problem is not None:
            raise ConfigError(f"cannot build an ensemble: {problem[1]}")
        self.members, self.names = members, names

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"Ensemble({len(self)} members: {', '.join(self.names[:4])}{', ...' if len(self) > 4 else ''})"

    # ------------------------------------------------------------------ what callers read
    @property
    def task(self) -> Task:
        """Member 0's task: it decodes :meth:`outputs` into the ensemble's answers."""
        return self.members[0].task

    @property
    def classes(self) -> list | None:
        """The label vocabulary every member shares, in index order, or None (regression)."""
        return self.members[0].classes

    @property
    def target_name(self) -> str | None:
        """The target column every member was trained on, if any."""
        return self.members[0].target_name

    @property
    def preprocessor(self) -> Preprocessor | None:
        """Member 0's preprocessing: how the data is read (a table, images...), which every
        member shares; each member still applies its own fitted statistics."""
        return self.members[0].preprocessor

    @property
    def imputes(self) -> bool:
        """Whether a member fills missing feature values (so reading keeps gaps)."""
        return any(m.imputes for m in self.members)

    # ------------------------------------------------------------------ use
    def outputs(self, x: Any, *, check_finite: bool = True) -> Tensor:
        """The combined outputs for ``x``, on the CPU, in member 0's output space: the log of
        the mean probability (the logit of the mean probability for a binary model with one
        output), or the mean prediction scaled as member 0 scales its target.

        Args:
            check_finite: refuse a member's NaN or infinite output (as :meth:`predict` does).

        Raises:
            DataError: a member's output is not finite (naming the data and the first such
                row), or members that read different numbers of rows from ``x``.
        """
        x = self._read_once(x)
        return self._combine(m.outputs(x, check_finite=check_finite) for m in self.members)

    def prediction_keys(self, x: Any) -> tuple[Tensor, dict[str, np.ndarray]]:
        """:meth:`outputs` for ``x`` and the columns naming each output row (an image's path,
        a sequence id, a forecast's time), as member 0's :meth:`Learner.prediction_keys`."""
        x = self._read_once(x)
        first, keys = self.members[0].prediction_keys(x)
        rest = (m.outputs(x) for m in self.members[1:])
        return self._combine(_chain(first, rest)), keys

    def predict(self, x: Any) -> np.ndarray:
        """Predicted labels (the most probable class of the mean probabilities), or the mean
        prediction in the target's original units."""
        return self.task.decode(self.outputs(x))

    def predict_proba(self, x: Any) -> np.ndarray:
        """The mean of the members' class probabilities, columns in :attr:`classes` order.
        Shape: (n, C)."""
        if not isinstance(self.task, ClassificationTask):
            raise ConfigError("predict_proba needs a classification model")
        return self.task.proba(self.outputs(x)).double().numpy()

    def evaluate(self, x: Any, y: Any = None, *, target: str | None = None) -> dict[str, Any]:
        """Loss and metrics of the combined outputs on labelled data (arrays + ``y``, or a
        table/file + ``target``), computed by member 0's task and the metric code a Learner's
        evaluation uses; the loss is member 0's loss of the combined outputs (for
        classification, the negative log-likelihood of the mean probabilities).

        Raises:
            DataError: bad data, a member output that is not finite, or members that read
                different numbers of rows from the data.
        """
        x, read = self._read_once(x, target), {"source": "evaluation data"}

        def outputs() -> Any:  # one member's outputs at a time: _combine keeps a running sum
            for m in self.members:  # each reads and encodes the data through its own fitting
                data, read["source"] = m._labelled(x, y, target, "evaluation data")
                out, tgt = _outputs_and_targets(m, data, want_targets="targets" not in read)
                check_finite_outputs(out, read["source"])
                read.setdefault("targets", tgt)
                yield out

        combined = self._combine(outputs())
        # The combined outputs are the data and an identity the model: the same loss and
        # metric code as Learner.evaluate, on the ensemble's answers in member 0's space.
        return self.members[0].trainer.evaluate(nn.Identity(), combined, target=read["targets"],
                                                task=self.task, finite_outputs=read["source"])

    def _read_once(self, x: Any, target: str | None = None) -> Any:
        """A table file as columns, read once for every member (each would read it again), as
        ``nnfit predict`` and ``nnfit evaluate`` read it; anything else as it is (a layout
        reads its own files)."""
        pre = self.preprocessor
        if not isinstance(x, (str, os.PathLike)) or pre is None or pre.layout is not None:
            return x
        return read_table(x, exclude=column_name(target) or self.target_name,
                          allow_missing=pre.table is not None or self.imputes)

    def _combine(self, outs: Any) -> Tensor:
        """The members' raw outputs (an iterable, consumed one at a time: a single running
        sum is held) as one output in member 0's space."""
        task, total, shape, n = self.task, None, None, 0
        for out in outs:
            if shape is not None and len(out) != shape[0]:
                raise DataError(f"ensemble members read {shape[0]} and {len(out)} rows from the same data")
            part = _log_proba(out) if isinstance(task, ClassificationTask) else _answer(self.members[n], out)
            if total is None:
                total, shape = part, tuple(out.shape)
            elif isinstance(task, ClassificationTask):
                total = torch.logaddexp(total, part)  # log of the summed probabilities, finite
            else:
                total = total + part
            n += 1
        assert total is not None and shape is not None
        if isinstance(task, ClassificationTask):
            mean_log = total - math.log(n)
            if len(shape) == 1 or shape[-1] == 1:  # one output: the logit of the mean probability
                return (mean_log[:, 1] - mean_log[:, 0]).reshape(shape)
            return mean_log  # its softmax is the mean probability itself
        mean = total / n
        if isinstance(task, RegressionTask) and task.mean is not None:  # back into member 0's scale
            mu, sd = (torch.tensor(v, dtype=torch.float64) for v in (task.mean, task.std))
            mean = (mean - mu) / sd
        return mean.reshape(shape)

    # ------------------------------------------------------------------ persistence
    def meta(self) -> dict[str, Any]:
        """``model.json``: every member's :meth:`Learner.meta` with its name."""
        return {"format": FORMAT_VERSION, "nnfit_version": __version__, "kind": KIND, "combine": COMBINE,
                "members": [{"name": n, **m.meta()} for n, m in zip(self.names, self.members, strict=True)]}

    def files(self) -> dict[str, bytes]:
        """What :meth:`save` writes besides the manifest, as bytes."""
        tensors = {_prefix(i) + k: v for i, m in enumerate(self.members)
                   for k, v in m.model.state_dict().items()}
        weights = tensors_to_bytes(tensors, {"format": FORMAT_VERSION, "kind": "weights"})
        meta = (json.dumps(self.meta(), indent=2) + "\n").encode("utf-8")
        return {MODEL_FILE: weights, META_FILE: meta}

    def save(self, path: str | Path) -> Path:
        """Write the ensemble into the directory ``path`` (see the module's docstring): each
        file atomically, then the manifest that covers them; returns ``path``."""
        out = Path(path)
        write_files(out, KIND, self.files())
        return out

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None, *, device: str = "auto",
             loss: Callable | None = None) -> Ensemble:
        """Load an ensemble directory written by :meth:`save` (:func:`write_ensemble`).

        Args:
            path: the directory.
            model: a module of your own (copied per member) for members saved without a
                spec (a sweep of a user's ``nn.Module``); built-in members ignore it.
            device: where the members run.
            loss: refused: an ensemble of custom-loss members is never written.

        Raises:
            ConfigError: ``loss`` given.
            CheckpointError: missing or damaged files, a newer format, a field of a member's
                ``model.json`` that is not valid, members that cannot be averaged, or weights
                that do not fit the members' models, all named in one line.
        """
        models, meta = read_ensemble_dir(Path(path), model)
        # seed=None: loading must not reseed the caller's global RNG; one trainer serves all
        trainer = Trainer(TrainConfig(device=device, quiet=True), quiet=True, seed=None)
        members = []
        for module, m in zip(models, meta["members"], strict=True):
            task = task_from_dict(m["task"], loss)
            pre = None if m["preprocess"] is None else Preprocessor.from_dict(m["preprocess"])
            member = Learner(module.to(trainer.runtime.device).eval(), task=task, preprocessor=pre,
                             spec=m["spec"], config=trainer.config, trainer=trainer, target_name=m["target"])
            members.append(member)
        return cls(members, [m["name"] for m in meta["members"]])


def write_ensemble(path: str | Path, members: Sequence[Learner], names: Sequence[str]) -> Path:
    """Write the ensemble of ``members`` (named ``names``) into the directory ``path``.

    Raises:
        ConfigError: members that cannot form an ensemble (see :class:`Ensemble`), named,
            before anything is written.
    """
    return Ensemble(members, names).save(path)


def is_ensemble_dir(path: str | Path) -> bool:
    """Whether ``path`` holds an ensemble: its (valid) manifest names the kind ``ensemble``.
    A damaged manifest is no ensemble here: loading it as a model names the damage."""
    p = Path(path)
    if not (p / MANIFEST).is_file():
        return False
    try:
        return read_manifest(p).get("kind") == KIND
    except CheckpointError:
        return False


def read_ensemble_dir(path: Path, model: nn.Module | None) -> tuple[list[nn.Module], dict[str, Any]]:
    """The members' models (on the CPU) and the checked ``model.json`` of an ensemble directory.

    Every file is verified against the manifest, ``model.json`` against
    :data:`~nnfit.io.validate.ENSEMBLE`, and the weights' header and values against the
    members' specs, all before a model is built.

    Raises:
        CheckpointError: naming the file and the field or tensor at fault.
    """
    from ..models import build_model

    files = read_bundle(path, KIND, (MODEL_FILE, META_FILE))
    meta = parse_json(files[META_FILE], path / META_FILE)
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise CheckpointError(f"{path / META_FILE}: not an nnfit ensemble file")
    fmt = meta.get("format", 0)
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer nnfit (format {fmt!r}); upgrade nnfit")
    validate(meta, ENSEMBLE, str(path / META_FILE))
    source, data = str(path / MODEL_FILE), files.pop(MODEL_FILE)
    wants, states = {}, []
    for i, m in enumerate(meta["members"]):
        if m["spec"] is None and model is None:
            raise CheckpointError(f"{path}: member {m['name']!r} is a user-defined module, which only "
                                  "Python can rebuild: nnfit.load(path, model=YourModule(...))")
        state, params = _member_state(m["spec"], model)
        wants.update({_prefix(i) + k: w for k, w in model_wants(state, params).items()})
        states.append(state)
    header = read_header(data, source)
    check_entries(header, wants, source, what="weights do not fit the members' models", vs="model")
    check_finite_bytes(data, header, wants, source)
    # Everything checked out: only now are the members built, as large as their saved weights.
    tensors, _ = tensors_from_bytes(data, source)
    del data
    by_member: list[dict[str, Tensor]] = [{} for _ in meta["members"]]
    for key, t in tensors.items():  # every key is members.{i}.NAME: check_entries saw them all
        _, i, name = key.split(".", 2)
        by_member[int(i)][name] = t
    models = []
    for m, state, own in zip(meta["members"], states, by_member, strict=True):
        if m["spec"] is None:
            module = copy.deepcopy(model)
        else:
            module = build_model(m["spec"], max_params=sum(s.numel for s in state.values()))
        load_state_dict_strict(module, own, source)
        models.append(module)
    return models, meta


def _member_state(spec: dict | None, model: nn.Module | None) -> tuple[dict[str, Any], list[str]]:
    """A member's ``state_dict`` shapes and parameter names: from its spec (analytic, nothing
    built), else from the user's module it is loaded into."""
    from ..models import state_shapes

    if spec is not None:
        state = state_shapes(spec)  # checked by the schema: cannot fail
        return state, [k for k, s in state.items() if s.parameter]
    assert model is not None
    return model.state_dict(), [n for n, _ in model.named_parameters()]


# ---------------------------------------------------------------------------- combining
def _chain(first: Tensor, rest: Any) -> Any:
    """``first``, then the items of ``rest``."""
    yield first
    yield from rest


def _log_proba(out: Tensor) -> Tensor:
    """A classifier's outputs as log class probabilities in float64. Shape: (n,), (n, 1)
    (one binary logit) or (n, C) -> (n, C)."""
    out = out.double()
    if out.ndim == 1 or out.shape[-1] == 1:
        z = out.reshape(-1)
        return torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], dim=1)
    return torch.log_softmax(out, dim=-1)


def _answer(member: Learner, out: Tensor) -> Tensor:
    """A regression member's outputs as predictions in the target's units (float64, (n, k))."""
    task = member.task
    assert isinstance(task, RegressionTask)
    return task.unscale(out.cpu())


@torch.inference_mode()
def _outputs_and_targets(member: Learner, data: Any, want_targets: bool) -> tuple[Tensor, Tensor | None]:
    """A member's raw outputs for labelled ``data``, in order, on the CPU, and (when asked)
    its encoded targets in the same order: one pass over the data."""
    trainer, model = member.trainer, member.model
    outs, targets = in_order(trainer, model, as_source(data).to(trainer.runtime.device))
    if not outs:
        raise ConfigError("evaluate: the data is empty")
    return torch.cat(outs).cpu(), torch.cat(targets).cpu() if want_targets else None


__all__ = ["Ensemble", "is_ensemble_dir", "read_ensemble_dir", "write_ensemble"]
