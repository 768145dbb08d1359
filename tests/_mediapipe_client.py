"""Run TFLite files through MediaPipe Tasks' ImageClassifier, as an app would.

Run by tests/test_phone_clients.py with the Python that has ``mediapipe`` installed (it may
be a second virtual environment: MediaPipe and TensorFlow need not share one). Imports
nothing from edgeclf or TensorFlow.

    python _mediapipe_client.py request.json  ->  JSON on stdout

request: {"models": [paths], "images": [png paths], "max_results": n (optional, default -1: all)}
answer:  {"<model>": {"error": str} | {"results": [[[index, name, score], ...] per image],
                                       "metadata": {...read with the schema MediaPipe ships}}}
"""

import json
import sys


def read_standard_metadata(path):
    """The TFLITE_METADATA flatbuffer, read with the generated schema code MediaPipe ships."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as md

    from_model = _metadata_buffer(open(path, "rb").read())
    if from_model is None:
        return None
    m = md.ModelMetadata.GetRootAsModelMetadata(from_model, 0)
    sg = m.SubgraphMetadata(0)
    inp, out = sg.InputTensorMetadata(0), sg.OutputTensorMetadata(0)
    norm = None
    for i in range(inp.ProcessUnitsLength()):
        pu = inp.ProcessUnits(i)
        if pu.OptionsType() == md.ProcessUnitOptions.NormalizationOptions:
            n = md.NormalizationOptions()
            n.Init(pu.Options().Bytes, pu.Options().Pos)
            norm = {"mean": n.MeanAsNumpy().tolist(), "std": n.StdAsNumpy().tolist()}
    props = None
    if inp.Content().ContentPropertiesType() == md.ContentProperties.ImageProperties:
        t = inp.Content().ContentProperties()
        ip = md.ImageProperties()
        ip.Init(t.Bytes, t.Pos)
        props = {"color_space": ip.ColorSpace(), "width": ip.DefaultSize().Width(),
                 "height": ip.DefaultSize().Height()}
    files = [(out.AssociatedFiles(i).Name().decode(), out.AssociatedFiles(i).Type())
             for i in range(out.AssociatedFilesLength())]
    text = lambda v: v.decode() if v is not None else None  # noqa: E731
    return {
        "identifier_ok": bool(md.ModelMetadata.ModelMetadataBufferHasIdentifier(from_model, 0)),
        "name": text(m.Name()), "description": text(m.Description()), "version": text(m.Version()),
        "author": text(m.Author()), "license": text(m.License()),
        "min_parser_version": text(m.MinParserVersion()),
        "input": {"normalization": norm, "image": props,
                  "stats": [inp.Stats().MinAsNumpy().tolist(), inp.Stats().MaxAsNumpy().tolist()]},
        "output": {"files": files, "axis_labels_type": md.AssociatedFileType.TENSOR_AXIS_LABELS,
                   "description": text(out.Description()),
                   "stats": [out.Stats().MinAsNumpy().tolist(), out.Stats().MaxAsNumpy().tolist()]
                   if out.Stats() is not None else None},
    }


def _metadata_buffer(data):
    from mediapipe.tasks.metadata import schema_py_generated as schema  # the TFLite schema

    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name() == b"TFLITE_METADATA":
            return model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes()
    return None


def main():
    import numpy as np
    from PIL import Image
    import mediapipe as mp
    from mediapipe.tasks import python as mp_tasks
    from mediapipe.tasks.python import vision

    req = json.load(open(sys.argv[1]))
    images = [mp.Image(image_format=mp.ImageFormat.SRGB,
                       data=np.ascontiguousarray(np.asarray(Image.open(p).convert("RGB"))))
              for p in req["images"]]
    answer = {}
    for path in req["models"]:
        try:
            options = vision.ImageClassifierOptions(
                base_options=mp_tasks.BaseOptions(model_asset_path=path), max_results=req.get("max_results", -1))
            with vision.ImageClassifier.create_from_options(options) as clf:
                results = []
                for img in images:
                    cats = clf.classify(img).classifications[0].categories
                    results.append([[c.index, c.category_name, float(c.score)] for c in cats])
            answer[path] = {"results": results, "metadata": read_standard_metadata(path)}
        except Exception as exc:  # report, not crash: the test names the file that failed
            answer[path] = {"error": f"{type(exc).__name__}: {exc}"}
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
