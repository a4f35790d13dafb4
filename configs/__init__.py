"""Configuration presets, installed as ``fedbcs_lightning.presets``."""
