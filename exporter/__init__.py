"""Keras → ONNX export, parity check and model-repository entries (``python -m exporter``).

Importing the package imports nothing heavy: :mod:`exporter.manifest` (standard library only) is what the
service uses to load and validate entries; TensorFlow comes in with :mod:`exporter.export`.
"""
