"""growres inside the trainers people already use.

Each module is thin glue over :func:`growres.grow` and :func:`growres.regroup_optimizer` for one framework, and
imports that framework only when used (``import growres`` imports none of them):

* :mod:`growres.integrations.transformers`: ``GrowthCallback`` for the Hugging Face ``Trainer``;
* :mod:`growres.integrations.lightning`: ``GrowthCallback`` for ``lightning.Trainer``.
"""
