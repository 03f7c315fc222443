"""AurA Studio's library: find the MLP units that express a concept and dampen them (AurA).

>>> from aura_core import load_model, load_concept_data, balanced_sample, discover_units
>>> from aura_core import collect_responses, fit_intervention, generate
>>> loaded = load_model("smollm2-135m")                                  # doctest: +SKIP
>>> data = balanced_sample(load_concept_data("starter"), 200, seed=0)     # doctest: +SKIP
>>> units = discover_units(loaded.model)                                  # doctest: +SKIP
>>> responses = collect_responses(loaded.model, loaded.tokenizer, data, units)   # doctest: +SKIP
>>> aura = fit_intervention(responses, "aura")                            # doctest: +SKIP
>>> generate(loaded.model, loaded.tokenizer, ["You are"], intervention=aura)     # doctest: +SKIP
"""

from aura_core.analysis.collect import CollectionCancelled, collect_responses
from aura_core.analysis.firing import experts_firing, unit_baselines
from aura_core.analysis.neurons import unit_detail
from aura_core.analysis.unit_profile import activation_profile
from aura_core.base.data import (
    ConceptData,
    Prompt,
    balanced_sample,
    load_concept_data,
    load_neutral_texts,
    load_preprompts,
    load_prompts,
    parse_concept_bytes,
)
from aura_core.errors import AuraError, DataError, InterventionError, ModelLoadError, UnitPatternError
from aura_core.evaluation.generation import SAMPLING_PRESETS, Generation, SamplingSettings, generate
from aura_core.evaluation.scoring import DEFAULT_SCORER, load_scorer, perplexity
from aura_core.method.auroc import auroc
from aura_core.method.fit import fit_intervention
from aura_core.method.intervention import Intervention, unit_table
from aura_core.method.registry import METHODS, method_label
from aura_core.method.responses import Responses
from aura_core.model.architecture import discover_units
from aura_core.model.loaded import LoadedModel
from aura_core.model.loading import DEFAULT_MODEL, PRESETS, load_model
from aura_core.runtime.engine import Engine, engine_for
from aura_core.runtime.folding import export_model, fold_into_weights
from aura_core.runtime.plans import intervened, rows_intervened

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_SCORER",
    "METHODS",
    "PRESETS",
    "SAMPLING_PRESETS",
    "AuraError",
    "CollectionCancelled",
    "ConceptData",
    "DataError",
    "Engine",
    "Generation",
    "Intervention",
    "InterventionError",
    "LoadedModel",
    "ModelLoadError",
    "Prompt",
    "Responses",
    "SamplingSettings",
    "UnitPatternError",
    "activation_profile",
    "auroc",
    "balanced_sample",
    "collect_responses",
    "discover_units",
    "engine_for",
    "experts_firing",
    "export_model",
    "fit_intervention",
    "fold_into_weights",
    "generate",
    "intervened",
    "load_concept_data",
    "load_model",
    "load_neutral_texts",
    "load_preprompts",
    "load_prompts",
    "load_scorer",
    "method_label",
    "parse_concept_bytes",
    "perplexity",
    "rows_intervened",
    "unit_baselines",
    "unit_detail",
    "unit_table",
]
