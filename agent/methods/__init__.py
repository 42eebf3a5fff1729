"""Measurement methods: the interface (:mod:`.base`), one module per method, shared
plumbing (:mod:`.common`) and the registry of implementations (:mod:`.registry`).

The methods' names, kinds and options are declared in :mod:`netmon.methods`.
"""
