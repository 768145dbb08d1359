"""QAT details that the export tests do not reach: a zero-epoch QAT keeps the float model's
BatchNorm statistics."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_zero_epoch_qat_keeps_batchnorm_statistics():
    from edgeclf._optional import import_keras
    from edgeclf.export.qat import train_qat
    from edgeclf.runtime.spec import OutputKind

    keras = import_keras()
    L = keras.layers
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(4, 3)(L.Rescaling(1 / 255.0)(inp))
    x = L.GlobalAveragePooling2D()(L.ReLU()(L.BatchNormalization(momentum=0.9)(x)))
    model = keras.Model(inp, L.Dense(2, name="logits")(x))
    images = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3), dtype=np.uint8)
    result = train_qat(model, images, np.zeros(32, np.int64), output_kind=OutputKind.LOGITS, epochs=0)
    for stat in ("moving_mean", "moving_variance"):
        before = [w.numpy() for w in model.weights if stat in w.name]
        after = [w.numpy() for w in result.model.weights if stat in w.name]
        assert before and len(before) == len(after), f"{stat} variables not found"
        for b, a in zip(before, after):
            np.testing.assert_array_equal(a, b, err_msg=f"{stat} moved during a zero-epoch QAT")
