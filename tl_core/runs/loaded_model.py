"""The loaded-model handle: one object for a trained run's model, whatever its head.

It gives the parts that prediction, explanations and exports need, for a Keras head and for a
scikit-learn head alike: the raw-pixel model, the base inside it, the preprocessing layer, the
base's last convolutional feature map (found from the graph, not from a table of layer names),
the head as a function of pooled features, and probabilities for raw pixels: the part up to the
pooled features runs on the host's engine (LiteRT on CPU hosts, ``engine.py``), the head in NumPy.

Its probabilities are the run's calibrated ones: training folds the validation temperature into the saved
head (``calibrate``; model_info's ``temperature_folded``). Run folders saved before that kept the
temperature in metrics.json only; loading folds it here, in memory, so they answer the same way. Every
consumer (Predictor, the REST server, explanations, exports) takes the probabilities from this handle and
applies no temperature of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import keras
import numpy as np

from tl_core import device
from tl_core.errors import TLError
from tl_core.models import engine as engines
from tl_core.models import modeling, preprocessing  # noqa: F401  preprocessing registers the Preprocess layer for loading
from tl_core.models.head_fit import apply_temperature, dense_softmax
from tl_core.models.heads import HeadKind, head_kind

if TYPE_CHECKING:
    from tl_core.runs.artifacts import Artifacts


@dataclass
class LoadedModel:
    model: keras.Model  # raw pixels -> probabilities (Keras head) or pooled features
    class_names: list[str]
    input_size: int
    resize: str = "crop"
    head_kind: str = "keras"
    sklearn_head: Optional[Any] = None
    engine_key: Optional[str] = None  # the conversion of its feature model, when training made it (model_info)
    temperature: float = 1.0  # applied to the head's probabilities: only a head whose weights cannot hold it
    _engine: Any = field(default=None, repr=False)
    _feature_model: Any = field(default=None, repr=False)
    _dense: Any = field(default=None, repr=False)

    @classmethod
    def from_artifacts(cls, artifacts: Artifacts, trusted: bool = False, engine_file=None) -> LoadedModel:
        """The run's model from its files. ``trusted``: see ``Artifacts.sklearn_head``. ``engine_file``: a LiteRT
        conversion of its feature model shipped beside it (an MLflow model's), used where this host runs LiteRT."""
        info = artifacts.model_info()
        if not info or not artifacts.model_path.exists():
            raise TLError(f"Run {artifacts.root.name!r} has no saved model. Pick a finished run.")
        device.share_gpu_memory()  # the server process shares the GPU with training processes
        model = keras.models.load_model(artifacts.model_path, safe_mode=True, compile=False)
        loaded = cls(
            model,
            list(info["class_names"]),
            int(info["input_size"]),
            info.get("resize", "squash"),
            info.get("head", "keras"),
            artifacts.sklearn_head(trusted),
            info.get("engine_key"),
        )
        if engine_file is not None and engines.wanted() == "litert":
            loaded._engine = engines.LiteRTEngine(engine_file)
        if not info.get("temperature_folded"):  # an older run folder, or a head that cannot hold it
            loaded.calibrate(float(info.get("temperature", artifacts.metrics().get("temperature", 1.0))))
        return loaded

    # ------------------------------------------------------------ calibration
    @property
    def kind(self) -> HeadKind:
        return head_kind(self.head_kind)

    def calibrate(self, temperature: float) -> None:
        """From now on give softmax(z / T) where the head gave softmax(z). A linear head gets T divided into
        its kernel and bias, in place (the Keras model's ``predictions`` layer, or the logistic regression's
        coefficients): whoever saves this model saves it calibrated, and every export holds it. Any other
        head's probabilities get T applied here (``head_probabilities``). Calibrating twice multiplies."""
        if not (np.isfinite(temperature) and temperature > 0):
            raise TLError(f"A temperature must be a positive number; got {temperature!r}.")
        if temperature == 1.0:
            return
        kind = self.kind
        if not kind.folds_temperature:
            self.temperature *= temperature
        elif kind.in_model:
            layer = self.model.get_layer("predictions")
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel / temperature, bias / temperature])
            self._dense = None
        else:
            classifier = self.sklearn_head.named_steps[kind.sklearn_estimator]
            classifier.coef_ = classifier.coef_ / temperature
            classifier.intercept_ = classifier.intercept_ / temperature

    # ------------------------------------------------------------ parts
    @property
    def base(self) -> keras.Model:
        """The pretrained base nested in the model (the nested model with weights; augmentation has none)."""
        nested = [layer for layer in self.model.layers if isinstance(layer, keras.Model)]
        return max(nested, key=lambda layer: len(layer.weights))

    @property
    def preprocess(self):
        """Raw pixels -> what the base expects (the Preprocess layer saved inside the model)."""
        return self.model.get_layer("preprocess")

    def last_conv_layer(self) -> str:
        """The base's last layer with a spatial (height x width x channels) output."""
        for layer in reversed(self.base.layers):
            try:
                shape = layer.output.shape
            except (AttributeError, ValueError):  # a layer called more than once has no single output
                continue
            if len(shape) == 4 and shape[1] and shape[2]:
                return layer.name
        raise TLError(f"Base {self.base.name!r} has no spatial feature map.")

    def head_probabilities(self, features: np.ndarray) -> np.ndarray:
        """Pooled base features (N, D) -> class probabilities (N, classes), for either head kind."""
        features = np.asarray(features, dtype=np.float32)
        if self.sklearn_head is not None:
            probs = modeling.probabilities_by_class(self.sklearn_head, features, len(self.class_names))
            return probs if self.temperature == 1.0 else apply_temperature(probs, self.temperature)
        if self._dense is None:  # read once: each read copies the variables out of TensorFlow
            self._dense = self.model.get_layer("predictions").get_weights()
        return dense_softmax(features, *self._dense)

    # ------------------------------------------------------------ forward
    @property
    def feature_model(self) -> keras.Model:
        """Raw pixels -> pooled base features (what the engine runs): preprocessing, base and pooling, no
        augmentation, laid out as training's extractor is, so both share one engine conversion."""
        if self._feature_model is None:
            pixels = keras.Input(shape=(self.input_size, self.input_size, 3), name="pixels")
            pooled = self.model.get_layer("pool")(self.base(self.preprocess(pixels), training=False))
            self._feature_model = keras.Model(pixels, pooled, name="extractor")
        return self._feature_model

    @property
    def engine(self):
        if self._engine is None:
            self._engine = engines.engine_for(self.feature_model, key=self.engine_key)
        return self._engine

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) raw pixels -> (N, D) pooled base features, for either head kind."""
        if not len(pixels):
            return np.zeros((0, int(self.model.get_layer("pool").output.shape[-1])), np.float32)
        return np.asarray(self.engine(pixels), dtype=np.float32)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) raw pixels -> (N, classes) probabilities."""
        return self.head_probabilities(self.features(pixels)).astype(np.float64)

    def agreement(self, pixels: np.ndarray, reference: Optional[np.ndarray] = None) -> dict:
        """This handle's engine against TensorFlow on ``pixels`` (``reference``: TensorFlow's features of
        them, if already computed): features and top-1 predictions."""
        return engines.agreement(
            self.engine, self.feature_model, pixels, head=self.head_probabilities, reference=reference
        )

    def warm_up(self) -> None:
        """Build the engine now, once: many users' first predictions arriving together would each build it."""
        self.probabilities(np.zeros((1, self.input_size, self.input_size, 3), dtype=np.float32))

    def linear_head(self) -> tuple[np.ndarray, np.ndarray]:
        """The head as (kernel, bias) of a softmax dense layer over pooled features (calibrated, as the
        probabilities are). A head kind that is not linear (``HeadKind.linear``) has none: ``TLError``."""
        kind = self.kind
        if not kind.linear:
            raise TLError(f"This run's head ({kind.label}) is not a linear layer over the features.")
        if kind.in_model:
            kernel, bias = self.model.get_layer("predictions").get_weights()
            return kernel, bias
        steps = self.sklearn_head.named_steps
        classifier, scaler = steps[kind.sklearn_estimator], steps.get("standardscaler")
        coef, intercept = classifier.coef_.astype(np.float64), classifier.intercept_.astype(np.float64)
        if coef.shape[0] == 1:  # binary: softmax([0, z]) is (1 - sigmoid(z), sigmoid(z))
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        if scaler is not None:  # (x - mean) / scale, folded into the weights
            coef, intercept = coef / scaler.scale_, intercept - (coef / scaler.scale_) @ scaler.mean_
        num_classes = len(self.class_names)
        kernel = np.zeros((coef.shape[1], num_classes))
        bias = np.full(num_classes, -1e4)  # a class the classifier never saw gets probability 0, as in the app
        seen = np.asarray(classifier.classes_, dtype=int)
        kernel[:, seen], bias[seen] = coef.T, intercept
        return kernel.astype(np.float32), bias.astype(np.float32)
