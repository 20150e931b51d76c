"""The backbone zoo: flat Keras models with in-model normalisation, ready for two-phase training and Grad-CAM.

- :mod:`training.zoo.catalogue` — the backbones and heads by name (no Keras import: cheap for ``--help``);
- :mod:`training.zoo.build` — ``build_model`` and the backbone / head layer split used for freezing;
- :mod:`training.zoo.normalisation`, :mod:`training.zoo.heads` — the layers they are made of.
"""
