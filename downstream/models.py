"""Task models: XGBoost and LightGBM behind one small interface (fit / predict_proba / save /
load), chosen by name. Saved in native formats (XGBoost JSON, LightGBM text), never pickled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

log = logging.getLogger(__name__)

PARAMS_FILE = "params.json"


@dataclass(frozen=True)
class GBDTParams:
    """Shared knobs; each family maps them onto its own parameter names."""

    n_estimators: int = 400  # upper bound on boosting rounds (early stopping picks fewer)
    learning_rate: float = 0.05
    max_depth: int = 4  # XGBoost depth; LightGBM uses num_leaves = 2**max_depth - 1
    min_child_samples: int = 40  # min rows in a leaf (XGBoost: min_child_weight = this / 10)
    subsample: float = 0.8  # rows per tree
    colsample: float = 0.8  # features per tree: z_u's 64 dims + item vectors are wide
    early_stopping_rounds: int = 30  # patience on the validation split
    n_jobs: int = 1  # OpenMP threads; on 2 shared cores, 2 threads ran 4-6x slower than 1
    seed: int = 0
    # cap min_child_samples at rows / LEAF_ROWS_DIVISOR at fit time: with the fixed 40, a
    # training set under 80 rows (genre labels of a small data set) gets no split at all
    scale_to_rows: bool = True


LEAF_ROWS_DIVISOR = 20  # a leaf may hold 1/20 of the training rows: about 4 levels of splits
MIN_LEAF_ROWS = 2


def sized_for(params: GBDTParams, n_rows: int) -> GBDTParams:
    """The params for a training set of n_rows: min_child_samples capped at n_rows / 20 (at
    least 2), so small sets can split; sets of 800+ rows keep the configured value."""
    if not params.scale_to_rows:
        return params
    cap = max(MIN_LEAF_ROWS, n_rows // LEAF_ROWS_DIVISOR)
    if cap >= params.min_child_samples:
        return params
    log.info("%d training rows: min_child_samples %d -> %d", n_rows, params.min_child_samples, cap)
    return replace(params, min_child_samples=cap)


class TaskModel(Protocol):
    """What every task model offers; `load` is a classmethod on the implementations."""

    family: ClassVar[str]
    params: GBDTParams

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        x_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> TaskModel: ...

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...

    def save(self, directory: Path) -> Path: ...


def _n_classes(y: np.ndarray) -> int:
    k = int(np.max(y)) + 1 if len(y) else 2
    return max(k, 2)


def _write_params(directory: Path, family: str, params: GBDTParams, n_classes: int) -> None:
    meta = {"family": family, "n_classes": n_classes, "params": asdict(params)}
    (directory / PARAMS_FILE).write_text(json.dumps(meta, indent=2))


def _read_params(directory: Path) -> tuple[GBDTParams, int]:
    meta = json.loads((Path(directory) / PARAMS_FILE).read_text())
    return GBDTParams(**meta["params"]), int(meta["n_classes"])


class XGBoostModel:
    """xgboost.train on a DMatrix; the booster is cut at the best iteration before saving."""

    family: ClassVar[str] = "xgboost"
    file_name: ClassVar[str] = "model.json"

    def __init__(self, params: GBDTParams | None = None) -> None:
        self.params = params or GBDTParams()
        self.n_classes = 2
        self.booster: Any = None

    def _native(self) -> dict[str, Any]:
        p = self.params
        native = {
            "eta": p.learning_rate,
            "max_depth": p.max_depth,
            "subsample": p.subsample,
            "colsample_bytree": p.colsample,
            "min_child_weight": p.min_child_samples / 10,
            "tree_method": "hist",
            "nthread": p.n_jobs,
            "seed": p.seed,
            "verbosity": 0,
        }
        if self.n_classes > 2:
            return native | {
                "objective": "multi:softprob",
                "num_class": self.n_classes,
                "eval_metric": "mlogloss",
            }
        return native | {"objective": "binary:logistic", "eval_metric": "logloss"}

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        x_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> XGBoostModel:
        import xgboost as xgb

        self.n_classes = _n_classes(np.concatenate([y, y_val if y_val is not None else []]))
        self.params = sized_for(self.params, len(y))
        train = xgb.DMatrix(x, label=y, missing=np.nan)
        evals, stop = [], None
        if x_val is not None and y_val is not None and len(y_val):
            evals, stop = (
                [(xgb.DMatrix(x_val, label=y_val, missing=np.nan), "val")],
                self.params.early_stopping_rounds,
            )
        booster = xgb.train(
            self._native(),
            train,
            num_boost_round=self.params.n_estimators,
            evals=evals,
            early_stopping_rounds=stop,
            verbose_eval=False,
        )
        best = getattr(booster, "best_iteration", None)
        self.booster = booster[: best + 1] if stop and best is not None else booster
        log.debug("xgboost: %d rounds", self.booster.num_boosted_rounds())
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        return np.asarray(self.booster.predict(xgb.DMatrix(x, missing=np.nan)))

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / self.file_name))
        _write_params(directory, self.family, self.params, self.n_classes)
        return directory / self.file_name

    @classmethod
    def load(cls, directory: Path) -> XGBoostModel:
        import xgboost as xgb

        params, n_classes = _read_params(directory)
        model = cls(params)
        model.n_classes = n_classes
        model.booster = xgb.Booster(model_file=str(Path(directory) / cls.file_name))
        model.booster.set_param({"nthread": params.n_jobs})
        return model


class LightGBMModel:
    """lightgbm.train; the booster is re-read from its text at the best iteration."""

    family: ClassVar[str] = "lightgbm"
    file_name: ClassVar[str] = "model.txt"

    def __init__(self, params: GBDTParams | None = None) -> None:
        self.params = params or GBDTParams()
        self.n_classes = 2
        self.booster: Any = None

    def _native(self) -> dict[str, Any]:
        p = self.params
        native = {
            "learning_rate": p.learning_rate,
            "num_leaves": 2**p.max_depth - 1,
            "min_data_in_leaf": p.min_child_samples,
            "bagging_fraction": p.subsample,
            "bagging_freq": 1,
            "feature_fraction": p.colsample,
            "num_threads": p.n_jobs,
            "seed": p.seed,
            "deterministic": True,
            "verbose": -1,
        }
        if self.n_classes > 2:
            return native | {"objective": "multiclass", "num_class": self.n_classes}
        return native | {"objective": "binary"}

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        x_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> LightGBMModel:
        import lightgbm as lgb

        self.n_classes = _n_classes(np.concatenate([y, y_val if y_val is not None else []]))
        self.params = sized_for(self.params, len(y))
        train = lgb.Dataset(x, label=y, free_raw_data=True)
        valid: list[Any] = []
        callbacks: list[Callable[..., Any]] = []
        if x_val is not None and y_val is not None and len(y_val):
            valid = [lgb.Dataset(x_val, label=y_val, reference=train)]
            callbacks = [lgb.early_stopping(self.params.early_stopping_rounds, verbose=False)]
        booster = lgb.train(
            self._native(),
            train,
            num_boost_round=self.params.n_estimators,
            valid_sets=valid,
            callbacks=callbacks,
        )
        best = booster.best_iteration if booster.best_iteration > 0 else -1
        # Through the text format once: predictions are those of the saved file, bit for bit.
        self.booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        log.debug("lightgbm: %d rounds", self.booster.current_iteration())
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, num_threads=self.params.n_jobs))

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / self.file_name))
        _write_params(directory, self.family, self.params, self.n_classes)
        return directory / self.file_name

    @classmethod
    def load(cls, directory: Path) -> LightGBMModel:
        import lightgbm as lgb

        params, n_classes = _read_params(directory)
        model = cls(params)
        model.n_classes = n_classes
        model.booster = lgb.Booster(model_file=str(Path(directory) / cls.file_name))
        return model


FAMILIES: dict[str, type[XGBoostModel] | type[LightGBMModel]] = {
    XGBoostModel.family: XGBoostModel,
    LightGBMModel.family: LightGBMModel,
}


def make_model(family: str, **params: Any) -> XGBoostModel | LightGBMModel:
    """make_model("xgboost" | "lightgbm", learning_rate=0.1, ...)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}: one of {', '.join(FAMILIES)}")
    return FAMILIES[family](replace(GBDTParams(), **params))


def load_model(directory: Path) -> XGBoostModel | LightGBMModel:
    """Load a saved model of either family (params.json names it)."""
    family = json.loads((Path(directory) / PARAMS_FILE).read_text())["family"]
    return FAMILIES[family].load(Path(directory))
