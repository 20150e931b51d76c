"""Measuring the service: the load script, the side-by-side benchmark and the soak.

``python -m bench load|benchmark|soak --help``. Needs the ``bench`` extra (httpx, matplotlib,
psutil); the benchmark also needs the ``gradcam`` extra for the Keras twin. Nothing here is imported by the
service itself.
"""
