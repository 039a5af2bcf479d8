"""Foundation models built by worldboot itself: the tiny base model of the procedural world.

This package sits beside ``train``: it may import both ``models`` and ``data`` (pre-training
needs the world's renderer and the model's tokenizer), and nothing below it imports it.
"""
