"""scikit-learn estimators: an nnfit model as ``NNClassifier`` / ``NNRegressor``, for
``Pipeline``, ``GridSearchCV``, ``cross_val_score`` and the rest of scikit-learn.

Each ``fit`` calls :func:`nnfit.fit` on the data, so nnfit's data handling applies (missing
values filled with training medians, standardisation, stratified validation split, early
stopping, and a DataFrame's categorical columns embedded); the fitted :class:`~nnfit.Learner` is
``learner_``. Inputs are checked the scikit-learn way first, so bad arrays (inf, complex, empty,
a wrong number of features) raise scikit-learn's own ``ValueError`` messages.

Pickling (scikit-learn clones estimators into worker processes with ``n_jobs``) keeps a fitted
model as the bytes of ``model.safetensors`` and ``model.json``, rebuilt and checked by
:meth:`nnfit.Learner.from_files` on unpickling: no torch object is pickled. nnfit's own loaders
never unpickle anything; unpickling an estimator is, as always with pickle, only for files you trust.

scikit-learn's estimator contract is built on inheritance (``BaseEstimator`` and the
``ClassifierMixin``/``RegressorMixin`` that give ``score`` and the tags), so these classes follow
it rather than the composition nnfit uses elsewhere.

Example:
    >>> import numpy as np
    >>> from nnfit.sklearn import NNClassifier
    >>> x, y = np.random.rand(60, 3), np.array(["no", "yes"] * 30)
    >>> clf = NNClassifier(hidden=(8,), epochs=2, random_state=0).fit(x, y)
    >>> clf.classes_.tolist(), clf.predict_proba(x[:2]).shape
    (['no', 'yes'], (2, 2))
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import CheckpointError, ConfigError

# The TrainConfig fields the constructors name; ``options`` holds any other one.
_TRAIN_KEYS = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "scheduler", "val_split",
               "patience", "device")
_MODEL_KEYS = ("hidden", "activation", "dropout", "batchnorm")
_TABLE_MODELS = ("mlp", "resmlp")  # nnfit.models.BUILT_IN_STACKS, without importing torch here
_SEED_LIMIT = 2**31 - 1  # a seed numpy and torch both take


class _NNEstimator(BaseEstimator):
    """What the classifier and the regressor share: parameters, fit, pickling.

    Args (keyword-only; stored as given, checked by ``fit`` through nnfit's config):
        model: a built-in table model, "mlp" or "resmlp". Default "mlp".
        hidden: hidden layer sizes. Default (64, 64).
        activation: relu, gelu, tanh, sigmoid, leaky_relu or silu. Default "relu".
        dropout: dropout probability after each hidden activation. Default 0.0.
        batchnorm: batch normalisation after each hidden linear layer. Default False.
        epochs: the most passes over the training data. Default 100.
        batch_size: training batch size. Default 32.
        lr: learning rate. Default 1e-3.
        optimizer: sgd, adam, adamw or rmsprop. Default "adam".
        weight_decay: L2 penalty (decoupled for adamw). Default 0.0.
        scheduler: none, step, multistep, exponential, cosine, onecycle or plateau.
        val_split: fraction of the data ``fit`` gets held out for early stopping (stratified
            for classification); 0 trains on all of it for ``epochs`` epochs. Default 0.1, as
            scikit-learn's ``MLPClassifier(early_stopping=True)``: with 100 epochs, a small
            table overfits without it, and the best epoch's weights are kept.
        patience: stop after this many epochs without a better validation loss; 0 never
            stops early. Default 10.
        random_state: an int is nnfit's ``seed`` (the fit equals ``nnfit train seed=N``);
            None or a ``RandomState`` draws the seed from NumPy, as scikit-learn does.
        device: auto, cpu, cuda or cuda:N. Default "cpu": scikit-learn runs estimators in
            parallel worker processes, which should not share one GPU unasked.
        verbose: show nnfit's progress display and data summary. Default False.
        options: any other :class:`~nnfit.TrainConfig` field, e.g. ``{"impute": False}``.
    """

    _task = "auto"

    def __init__(self, *, model: str = "mlp", hidden: tuple[int, ...] = (64, 64),
                 activation: str = "relu", dropout: float = 0.0, batchnorm: bool = False,
                 epochs: int = 100, batch_size: int = 32, lr: float = 1e-3,
                 optimizer: str = "adam", weight_decay: float = 0.0, scheduler: str = "none",
                 val_split: float = 0.1, patience: int = 10, random_state: Any = None,
                 device: str = "cpu", verbose: bool = False,
                 options: dict[str, Any] | None = None) -> None:
        # scikit-learn's rule: store the arguments as given; fit reads and checks them.
        self.model = model
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.batchnorm = batchnorm
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.scheduler = scheduler
        self.val_split = val_split
        self.patience = patience
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.options = options

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # nnfit fills missing values with training medians
        return tags

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any) -> _NNEstimator:
        """Train a new model on ``X`` and ``y`` (any earlier fit is discarded).

        Args:
            X: a 2-d array-like of numbers (NaN for missing values), or a pandas DataFrame,
                which nnfit reads as a table (categorical and text columns included).
            y: labels of any type (classifier) or numeric targets, one column or several
                (regressor).

        Returns:
            self, fitted: ``learner_``, ``history_``, ``n_features_in_`` (and
            ``feature_names_in_`` for a DataFrame; ``classes_`` for a classifier).

        Raises:
            ValueError: inputs scikit-learn refuses (inf, complex, empty, one sample...), with
                its messages; nnfit's ConfigError and DataError (both ValueErrors) for bad
                settings or data, naming the setting or column.
        """
        from .learner import fit

        X, y = self._checked_fit(X, y)
        settings = self._settings()
        self.learner_ = fit(settings.pop("spec"), X, y, task=self._fit_task(y), **settings)
        self.history_ = self.learner_.history.records
        return self

    def _checked_fit(self, X: Any, y: Any) -> tuple[Any, Any]:
        """``X`` and ``y`` checked as scikit-learn checks them (setting ``n_features_in_``):
        a DataFrame keeps its columns for nnfit's table reading."""
        if _is_frame(X):  # checked as it is (any column type, gaps too), read by nnfit as a table
            _, y = validate_data(self, X, y, reset=True, dtype=None, ensure_all_finite=False,
                                 ensure_min_samples=2, **self._y_checks())
            return X, y
        return validate_data(self, X, y, reset=True, dtype=(np.float64, np.float32),
                             ensure_all_finite="allow-nan", ensure_min_samples=2, **self._y_checks())

    def _y_checks(self) -> dict[str, Any]:
        """How ``validate_data`` checks ``y``: one column for a classifier."""
        return {}

    def _fit_task(self, y: Any) -> str:
        """The nnfit task to train."""
        return self._task

    def _settings(self) -> dict[str, Any]:
        """nnfit.fit's keyword arguments: the model spec and the TrainConfig fields."""
        if self.options is not None and not isinstance(self.options, dict):
            raise ConfigError("options must be a dict of TrainConfig fields, got "
                              f"{type(self.options).__name__}")
        options = dict(self.options or {})
        fixed = [k for k in ("task", "target", "val", "run_dir", "resume", "config", "callbacks")
                 if k in options]
        if fixed:  # fit's own arguments, which the estimator decides
            raise ConfigError(f"options: {fixed[0]!r} is not a training setting: {type(self).__name__} "
                              "decides it")
        named = [k for k in (*_TRAIN_KEYS, *_MODEL_KEYS, "seed", "quiet", "model") if k in options]
        if named:
            param = {"seed": "random_state", "quiet": "verbose"}.get(named[0], named[0])
            raise ConfigError(f"options: {named[0]!r} is set by {type(self).__name__}'s parameter "
                              f"{param}=, not in options")
        if self.model not in _TABLE_MODELS:  # images and sequences do not come as rows of features
            raise ConfigError(f"model must be one of {', '.join(_TABLE_MODELS)}, got {self.model!r}")
        hidden = list(self.hidden) if isinstance(self.hidden, (tuple, list)) else self.hidden
        spec = {"name": self.model, "hidden": hidden, "activation": self.activation,
                "dropout": self.dropout, "batchnorm": self.batchnorm}
        seed = self.random_state
        if seed is None or isinstance(seed, np.random.RandomState):  # drawn as sklearn draws
            seed = int(check_random_state(seed).randint(_SEED_LIMIT))
        return {"spec": spec, **{k: getattr(self, k) for k in _TRAIN_KEYS}, **options,
                "seed": seed, "quiet": not self.verbose}

    # ------------------------------------------------------------------ use
    def _checked(self, X: Any) -> Any:
        """``X`` for prediction, checked against the fit's features (count and names)."""
        check_is_fitted(self)
        if _is_frame(X):
            validate_data(self, X, reset=False, skip_check_array=True)
            return X
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32),
                          ensure_all_finite="allow-nan")
        if hasattr(self, "feature_names_in_"):  # fitted on a table: nnfit reads rows by name
            import pandas as pd

            X = pd.DataFrame(X, columns=self.feature_names_in_)
        return X

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (classifier, in ``classes_``' type) or values (regressor).

        Shape: (n,) or, for a regressor fitted on several target columns, (n, targets).
        """
        X = self._checked(X)  # first: unfitted, it raises NotFittedError
        return self.learner_.predict(X)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        """The estimator's state, its fitted model as ``model.safetensors`` and
        ``model.json`` bytes (and its history as plain records): no torch object."""
        state = dict(super().__getstate__())  # object's is the instance's own __dict__
        learner = state.pop("learner_", None)
        if learner is not None:
            state["learner_"] = {"files": learner.files(), "stop_reason": learner.stop_reason}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild the fitted model from its bytes, checked as a saved model is.

        Raises:
            CheckpointError: the model bytes are damaged or do not fit, named.
        """
        from .callbacks import History
        from .learner import Learner

        where = f"pickled {type(self).__name__}"
        saved = state.pop("learner_", None)
        if saved is not None:
            try:
                files, reason = saved["files"], saved["stop_reason"]
                history = state.get("history_", [])
                if not (isinstance(files, dict) and isinstance(reason, str) and isinstance(history, list)):
                    raise TypeError("not the fields a fitted estimator pickles")
                learner = Learner.from_files(files, device=state.get("device", "cpu"), source=where)
                learner.history = History(history)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise CheckpointError(f"{where}: its fitted state does not load ({e})") from None
            learner.stop_reason = reason
            _check_classes(state, learner, where)
            state["learner_"] = learner
        super().__setstate__(state)


def _check_classes(state: dict[str, Any], learner: Any, where: str) -> None:
    """A classifier's ``classes_`` must be the labels its model predicts, in order: a pickle
    whose list was edited would otherwise name every prediction wrongly, silently.

    Raises:
        CheckpointError: the pickled labels are not the model's.
    """
    if "classes_" not in state:
        return
    model_classes = learner.classes
    pickled = np.asarray(state["classes_"])
    if model_classes is None or len(pickled) != len(model_classes) or [str(c) for c in pickled] != [
            str(c) for c in model_classes]:
        raise CheckpointError(f"{where}: classes_ {pickled.tolist()!r:.80} are not its model's labels")


class NNClassifier(ClassifierMixin, _NNEstimator):
    """An nnfit network as a scikit-learn classifier (binary or multiclass, labels of any type).

    Args: see :class:`_NNEstimator` (all keyword-only, stored as given).

    Attributes:
        learner_: the fitted :class:`nnfit.Learner` (save it, inspect it, evaluate it).
        classes_: the labels, sorted; ``predict_proba``'s columns are in this order.
        history_: per-epoch records of the fit (losses, validation metrics, lr).
        n_features_in_: features seen in ``fit``; ``feature_names_in_`` for a DataFrame.

    Example:
        >>> from sklearn.pipeline import make_pipeline
        >>> from sklearn.preprocessing import StandardScaler
        >>> x, y = np.random.rand(60, 3), np.arange(60) % 3
        >>> pipe = make_pipeline(StandardScaler(), NNClassifier(hidden=(8,), epochs=2)).fit(x, y)
        >>> pipe.predict(x[:4]).shape
        (4,)
    """

    def _y_checks(self) -> dict[str, Any]:
        return {"multi_output": False}

    def _fit_task(self, y: Any) -> str:
        check_classification_targets(y)  # continuous targets: "Unknown label type"
        # nnfit's "auto" may read many integer labels as a regression target: this is a classifier
        return "binary" if len(np.unique(y)) == 2 else "multiclass"

    def fit(self, X: Any, y: Any) -> NNClassifier:
        """Train a new model (see :meth:`_NNEstimator.fit`); sets ``classes_`` too."""
        super().fit(X, y)
        self.classes_ = np.asarray(self.learner_.classes)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels: for each row, the class of the largest probability. Shape: (n,)."""
        proba = self.predict_proba(X)  # first: unfitted, it raises NotFittedError
        return self.classes_[proba.argmax(axis=1)]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in ``classes_`` order, each row summing to 1.

        Shape: (n, len(classes_)).
        """
        X = self._checked(X)  # first: unfitted, it raises NotFittedError
        return self.learner_.predict_proba(X)


class NNRegressor(RegressorMixin, _NNEstimator):
    """An nnfit network as a scikit-learn regressor (one target or several).

    Args: see :class:`_NNEstimator` (all keyword-only, stored as given). Targets are
    standardised for training and predictions returned in their units.

    Attributes:
        learner_: the fitted :class:`nnfit.Learner`.
        history_: per-epoch records of the fit.
        n_features_in_: features seen in ``fit``; ``feature_names_in_`` for a DataFrame.

    Example:
        >>> x = np.random.rand(60, 2)
        >>> reg = NNRegressor(hidden=(8,), epochs=2, random_state=0).fit(x, x.sum(axis=1))
        >>> reg.predict(x[:3]).shape
        (3,)
    """

    _task = "regression"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _y_checks(self) -> dict[str, Any]:
        return {"multi_output": True, "y_numeric": True}


def _is_frame(x: Any) -> bool:
    """Whether ``x`` is a pandas DataFrame (pandas is optional: never imported here)."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(x, pd.DataFrame)


__all__ = ["NNClassifier", "NNRegressor"]
