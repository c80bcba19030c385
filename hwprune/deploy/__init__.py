"""From a chosen encoding to a deployable file: retrain, export (ONNX, TensorRT) and verify."""
