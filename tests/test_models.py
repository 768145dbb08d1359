import json

import pytest
from click.testing import CliRunner

from edgeclf.cli import main
from edgeclf.errors import UsageError
from edgeclf.train.zoo import MODELS, build_model

TUTORIAL_PARAMS = [
    ("tutorial_cnn", 180, 5, 3_989_285),
    ("tutorial_cnn_aug", 180, 5, 3_989_285),
    ("cats_dogs_cnn", 160, 2, 5_337_250),
    ("horse_human_cnn", 150, 2, 9_494_561),
]

SMALL = {"tutorial_cnn": 24, "tutorial_cnn_aug": 24, "cats_dogs_cnn": 24, "horse_human_cnn": 24,
         "mobilenet_v2": 32, "mobilenet_v3_small": 32}


@pytest.mark.parametrize("name, size, classes, params", TUTORIAL_PARAMS)
def test_parameter_counts_match_the_tutorials(name, size, classes, params):
    assert build_model(name, image_size=size, num_classes=classes).model.count_params() == params


def test_every_variant_is_listed_and_tested():
    assert set(SMALL) == set(MODELS)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_variant_builds_flat_with_the_contract_input_and_output(name):
    import numpy as np

    import tf_keras as keras

    size = SMALL[name]
    classes = 2 if name == "horse_human_cnn" else 3
    built = build_model(name, image_size=size, num_classes=classes)
    m = built.model
    nested = [layer.name for layer in m.layers if isinstance(layer, keras.Model)]
    assert nested == [], f"{name} nests models {nested}; tfmot needs one flat graph"
    assert m.input_shape == (None, size, size, 3), f"{name} input shape"
    assert m.inputs[0].dtype.name == "float32"
    assert m.layers[-1].dtype == "float32", f"{name} head must be float32"
    want_out = 1 if built.output_kind == "sigmoid" else classes
    assert m.output_shape == (None, want_out), f"{name} output shape"
    assert built.output_kind == ("sigmoid" if name == "horse_human_cnn" else "logits")
    assert any(isinstance(layer, keras.layers.Rescaling) for layer in m.layers), f"{name} normalises inside"
    aug_types = (keras.layers.RandomFlip, keras.layers.RandomRotation, keras.layers.RandomZoom)
    assert not any(isinstance(layer, aug_types) for layer in m.layers), f"{name} has augmentation inside"
    y = m.predict(np.full((2, size, size, 3), 255.0, np.float32), verbose=0)
    assert y.shape == (2, want_out) and np.isfinite(y).all()


def test_mobilenet_scaling_maps_0_255_to_minus1_1():
    import numpy as np

    import tf_keras as keras

    m = build_model("mobilenet_v3_small", image_size=32, num_classes=3).model
    resc = m.get_layer("rescaling")
    out = keras.Model(m.input, resc.output).predict(np.stack([np.zeros((32, 32, 3)), np.full((32, 32, 3), 255.0)]),
                                                    verbose=0)
    assert np.allclose(out[0], -1.0) and np.allclose(out[1], 1.0)
    # MobileNetV3's own preprocessing is switched off: only one Rescaling in the graph
    assert sum(isinstance(layer, keras.layers.Rescaling) for layer in m.layers) == 1


def test_mobilenet_v2_alpha_and_base_layers():
    small = build_model("mobilenet_v2", image_size=32, num_classes=3, alpha=0.35)
    big = build_model("mobilenet_v2", image_size=32, num_classes=3, alpha=1.0)
    assert small.model.count_params() < big.model.count_params()
    assert len(small.base_layers) > 100 and "rescaling" not in small.base_layers
    assert "logits" not in small.base_layers


def test_mobilenet_from_scratch_gets_fast_batchnorm_statistics(tmp_path):
    from edgeclf.train.zoo import FROM_SCRATCH_BN_MOMENTUM

    scratch = build_model("mobilenet_v2", image_size=32, num_classes=3, alpha=0.35)
    bns = [l for l in scratch.model.layers if type(l).__name__ == "BatchNormalization"]
    assert bns and all(l.momentum == FROM_SCRATCH_BN_MOMENTUM for l in bns)
    # Pretrained statistics are kept as Keras made them.
    weights = tmp_path / "base.h5"
    from edgeclf._optional import import_keras

    keras = import_keras()
    keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None,
                                   alpha=0.35).save_weights(str(weights))
    pre = build_model("mobilenet_v2", image_size=32, num_classes=3, alpha=0.35, weights=str(weights))
    assert {l.momentum for l in pre.model.layers if type(l).__name__ == "BatchNormalization"} == {0.999}


def test_augmentation_is_separate_and_only_for_the_aug_variant():
    assert build_model("tutorial_cnn_aug", image_size=24, num_classes=3).augmentation is not None
    assert build_model("tutorial_cnn", image_size=24, num_classes=3).augmentation is None


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "resnet", "num_classes": 3}, "unknown model"),
    ({"name": "horse_human_cnn", "num_classes": 3}, "exactly 2 classes"),
    ({"name": "tutorial_cnn", "num_classes": 1}, "at least 2"),
    ({"name": "tutorial_cnn", "num_classes": 3, "image_size": 0}, "positive"),
    ({"name": "tutorial_cnn", "num_classes": 3, "weights": "imagenet"}, "trained from scratch"),
    ({"name": "mobilenet_v2", "num_classes": 3, "image_size": 32, "weights": "/no/such.h5"}, "no such file"),
])
def test_bad_model_options(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(UsageError, match=message):
        build_model(name, **kwargs)


def test_cli_models_json_reports_tutorial_count():
    r = CliRunner().invoke(main, ["models", "tutorial_cnn", "--image-size", "180", "--num-classes", "5", "--json", "-"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["params"] == 3_989_285


def test_cli_models_lists_all_and_summary_shows_params():
    runner = CliRunner()
    r = runner.invoke(main, ["models"])
    assert r.exit_code == 0
    for name in MODELS:
        assert name in r.output
    r = runner.invoke(main, ["models", "tutorial_cnn_aug", "--image-size", "32", "--num-classes", "3"])
    assert r.exit_code == 0, r.output
    assert "conv1" in r.output and "training-only augmentation" in r.output
    r = runner.invoke(main, ["models", "nope"])
    assert r.exit_code == 2 and "unknown model" in r.output


@pytest.mark.parametrize("name,alpha", [("mobilenet_v2", 0.6), ("mobilenet_v3_small", 0.5)])
def test_imagenet_weights_for_a_width_keras_lacks_is_a_usage_error(name, alpha):
    with pytest.raises(UsageError, match="--alpha"):
        build_model(name, image_size=32, num_classes=2, weights="imagenet", alpha=alpha)


def test_no_network_for_imagenet_weights_is_a_usage_error(monkeypatch):
    from edgeclf._optional import import_keras

    keras = import_keras()

    def offline(*a, **k):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- no route to host")

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    with pytest.raises(UsageError, match="cannot download the imagenet weights .*--weights none"):
        build_model("mobilenet_v2", image_size=32, num_classes=2, weights="imagenet")


def test_cli_model_choices_are_exactly_the_zoo():
    # The CLI's choices come from the registry (importing it loads no TensorFlow: test_export_plan).
    from edgeclf.cli.train import train_command

    opt = next(p for p in train_command.params if p.name == "model")
    assert list(opt.type.choices) == list(MODELS)
