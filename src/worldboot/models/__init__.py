"""Backbones: the Protocol every backbone implements, Chameleon/Anole, the VQ decoder, tiny builders."""
