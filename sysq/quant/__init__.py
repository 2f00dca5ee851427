"""Quantization engine: math, observers, QuantLinear, KV cache, recipes, GPTQ, real backends, save/load."""
from .api import QuantSummary, calibrate, convert, model_bytes, prepare, quant_linears, quantize, quantize_weights
from .fuse import fuse_projections
from .export import export_compressed_tensors, unexportable
from .io import is_sysq_folder, load_quantized, save
from .kv import add_kv_quant, remove_kv_quant
from .linear import QuantLinear
from .observers import InputStats, collect_input_stats
from .recipes import PRESETS, KVSpec, QuantSpec, Recipe, get_recipe

__all__ = ["quantize", "convert", "prepare", "calibrate", "quantize_weights", "quant_linears", "model_bytes", "fuse_projections",
           "QuantSummary", "save", "export_compressed_tensors", "unexportable", "load_quantized", "is_sysq_folder",
           "add_kv_quant", "remove_kv_quant", "QuantLinear",
           "collect_input_stats", "InputStats", "Recipe", "QuantSpec", "KVSpec", "PRESETS", "get_recipe"]
