"""edgeclf.export: post-training quantization, QAT, TFLite and ONNX conversion, metadata, golden files."""
