"""nnfit.sklearn: scikit-learn's own estimator checks, Pipeline, GridSearchCV and
cross_val_score with n_jobs=2, pickling without torch objects, and the numbers against the
Learner underneath."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pandas as pd
import pytest
from joblib.externals.loky import get_reusable_executor
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import nnfit
from nnfit.errors import CheckpointError, ConfigError
from nnfit.sklearn import NNClassifier, NNRegressor

# Small and quick, yet enough epochs to reach the accuracy and R^2 scikit-learn's checks
# demand (0.83 on its blobs, 0.5 on its regression data): the whole check run takes seconds.
QUICK = {"hidden": (16,), "epochs": 20, "lr": 0.01, "batch_size": 64, "random_state": 0}


@parametrize_with_checks([NNClassifier(**QUICK), NNRegressor(**QUICK)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """Three separable classes with string labels, on features of very different scales."""
    rng = np.random.default_rng(0)
    y = np.array(["cat", "dog", "eel"])[np.arange(150) % 3]
    centers = np.array([[0.0, 0.0, 0.0], [3.0, 3.0, 0.0], [0.0, 3.0, 3.0]])
    x = centers[np.arange(150) % 3] + rng.normal(scale=0.5, size=(150, 3))
    return x * np.array([1.0, 100.0, 0.01]), y


@pytest.fixture(scope="module")
def no_workers_left():
    """Shut down joblib's worker processes (n_jobs=2) once the tests that share them are done:
    starting a worker (importing torch and nnfit) is most of those tests' time."""
    yield
    get_reusable_executor().shutdown(wait=True)


def test_classes_are_the_string_labels_and_proba_is_the_learners(blobs):
    x, y = blobs
    clf = NNClassifier(**QUICK).fit(x, y)
    assert clf.classes_.tolist() == ["cat", "dog", "eel"]
    assert clf.n_features_in_ == 3 and not hasattr(clf, "feature_names_in_")
    proba = clf.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(proba, clf.learner_.predict_proba(x))
    np.testing.assert_array_equal(clf.predict(x), clf.learner_.predict(x))
    assert clf.score(x, y) > 0.9
    assert len(clf.history_) == len(clf.learner_.history) >= 1


def test_random_state_is_nnfits_seed(blobs):
    """An int random_state fits exactly what nnfit.fit with that seed fits."""
    x, y = blobs
    clf = NNClassifier(**{**QUICK, "random_state": 3}).fit(x, y)
    spec = {"name": "mlp", "hidden": [16], "activation": "relu", "dropout": 0.0, "batchnorm": False}
    learner = nnfit.fit(spec, x, y, task="multiclass", epochs=20, lr=0.01, batch_size=64, seed=3,
                        val_split=0.1, patience=10, device="cpu", quiet=True)
    np.testing.assert_array_equal(clf.predict_proba(x), learner.predict_proba(x))


def test_regression_r2_on_an_easy_problem():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(400, 3))
    y = 3 * x[:, 0] - 2 * x[:, 1] + x[:, 2] ** 2 + 10
    reg = NNRegressor(hidden=(32,), epochs=60, lr=0.01, random_state=0).fit(x[:300], y[:300])
    assert reg.score(x[300:], y[300:]) > 0.9
    assert reg.predict(x[:5]).shape == (5,)


def test_in_a_pipeline(blobs):
    x, y = blobs
    pipe = Pipeline([("scale", StandardScaler()), ("nn", NNClassifier(**QUICK))]).fit(x, y)
    assert pipe.score(x, y) > 0.9
    assert pipe.predict_proba(x[:4]).shape == (4, 3)


def test_grid_search_in_two_processes(blobs, no_workers_left):
    x, y = blobs
    search = GridSearchCV(NNClassifier(**QUICK), {"lr": [1e-3, 1e-2]}, cv=3, n_jobs=2).fit(x, y)
    assert search.best_params_["lr"] in (1e-3, 1e-2)
    assert search.cv_results_["mean_test_score"].shape == (2,)
    assert search.best_estimator_.lr == search.best_params_["lr"]
    assert search.score(x, y) > 0.8


def test_cross_val_score_in_two_processes(no_workers_left):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 2))
    scores = cross_val_score(NNRegressor(**QUICK), x, x @ [2.0, -1.0], cv=3, n_jobs=2)
    assert scores.shape == (3,) and scores.min() > 0.5
    # fitted estimators come back from the workers pickled: as safetensors bytes, rebuilt here
    fitted = cross_validate(NNRegressor(**QUICK), x, x @ [2.0, -1.0], cv=3, n_jobs=2,
                            return_estimator=True)
    for est, score in zip(fitted["estimator"], fitted["test_score"], strict=True):
        assert est.score(x, x @ [2.0, -1.0]) > 0.5 and score > 0.5


class _NoTorch(pickle.Unpickler):
    """An unpickler that refuses any torch class: the state must hold none."""

    def find_class(self, module: str, name: str):
        assert not module.startswith("torch"), f"pickled a torch object: {module}.{name}"
        return super().find_class(module, name)


@pytest.mark.parametrize("cls", [NNClassifier, NNRegressor])
def test_pickle_round_trip_holds_no_torch_object(cls, blobs):
    x, labels = blobs
    y = labels if cls is NNClassifier else x[:, 0] - x[:, 2]
    est = cls(**{**QUICK, "batchnorm": True, "dropout": 0.1}).fit(x, y)
    data = pickle.dumps(est)
    copy = _NoTorch(io.BytesIO(data)).load()
    np.testing.assert_array_equal(copy.predict(x), est.predict(x))
    if cls is NNClassifier:
        np.testing.assert_array_equal(copy.predict_proba(x), est.predict_proba(x))
        np.testing.assert_array_equal(copy.classes_, est.classes_)
    assert copy.history_ == est.history_ and copy.learner_.history.records == est.history_
    assert copy.get_params() == est.get_params()
    assert "learner_" in est.__dict__  # pickling left the estimator itself as it was


def test_damaged_pickled_weights_are_refused_by_name(blobs):
    x, y = blobs
    state = NNClassifier(**QUICK).fit(x, y).__getstate__()
    files = state["learner_"]["files"]
    files["model.safetensors"] = files["model.safetensors"][:-8]
    with pytest.raises(CheckpointError, match="pickled NNClassifier/model.safetensors"):
        NNClassifier().__setstate__(state)


def test_a_dataframe_is_read_as_a_table(blobs):
    """Column names are kept and checked, and a text column is embedded (nnfit's table reading)."""
    x, y = blobs
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(kind=np.where(x[:, 0] > 1, "hi", "lo"))
    clf = NNClassifier(**QUICK).fit(frame, y)
    assert clf.feature_names_in_.tolist() == ["a", "b", "c", "kind"] and clf.n_features_in_ == 4
    assert len(clf.learner_.spec["embeddings"]) == 1  # "kind"
    assert clf.score(frame, y) > 0.9
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(frame[["b", "a", "c", "kind"]])


def test_options_pass_other_settings_and_refuse_named_ones(blobs):
    x, y = blobs
    clf = NNClassifier(**QUICK, options={"val_split": 0.2})
    with pytest.raises(ConfigError, match="'val_split' is set by NNClassifier's parameter val_split="):
        clf.fit(x, y)
    clf = NNClassifier(**{**QUICK, "epochs": 3}, patience=0, options={"restore_best": False}).fit(x, y)
    assert len(clf.history_) == 3
    with pytest.raises(ConfigError, match="unknown"):
        NNClassifier(**QUICK, options={"no_such_setting": 1}).fit(x, y)
    with pytest.raises(ConfigError, match="model must be one of mlp, resmlp, got 'cnn'"):
        NNClassifier(model="cnn").fit(x, y)


def test_tampered_pickled_state_is_refused_by_name():
    """An edited ``classes_`` would name every prediction wrongly; broken fields raise one
    CheckpointError, never a bare Python error."""
    import numpy as np

    from nnfit.errors import CheckpointError, ConfigError
    from nnfit.sklearn import NNClassifier

    x = np.random.default_rng(0).normal(size=(80, 3))
    y = np.array(["a", "b"])[(x[:, 0] > 0).astype(int)]
    fitted = NNClassifier(epochs=2, hidden=(4,)).fit(x, y)
    state = fitted.__getstate__()
    state["classes_"] = np.array(["b", "a"])
    with pytest.raises(CheckpointError, match="classes_"):
        NNClassifier.__new__(NNClassifier).__setstate__(state)
    state = fitted.__getstate__()
    state["learner_"] = {"files": 3, "stop_reason": ""}
    with pytest.raises(CheckpointError, match="does not load"):
        NNClassifier.__new__(NNClassifier).__setstate__(state)
    with pytest.raises(ConfigError, match="'task' is not a training setting"):
        NNClassifier(options={"task": "binary"}).fit(x, y)
    with pytest.raises(ConfigError, match="options must be a dict"):
        NNClassifier(options=[1]).fit(x, y)
