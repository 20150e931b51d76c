"""The HTTP routes: prediction, models, health and metrics, each in its own module."""
