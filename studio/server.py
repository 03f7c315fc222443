"""What the server's operator allows: set in a file or environment variables, never from a browser.

``AURA_STUDIO_CONFIG`` names a TOML file with a ``[studio]`` table; single environment variables
override it. Workshop mode fixes the model list and the prepared experts, caps the work one
person can ask for, and hides the controls that reach the server's files, arbitrary Hub ids or
code from a model repository.

    [studio]
    workshop = true
    models = ["smollm2-135m"]
    max_texts_per_class = 100
    max_samples = 10

>>> config = server_config({"AURA_WORKSHOP": "1"})
>>> config.workshop, config.allow_server_paths, config.offered_models()
(True, False, ('smollm2-135m',))
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from aura_core import DEFAULT_MODEL, PRESETS, AuraError

__all__ = ["ServerConfig", "server_config"]


@dataclass(frozen=True)
class ServerConfig:
    """The operator's settings; every cap is a ceiling on what a browser user may ask for."""

    workshop: bool = False
    default_model: str = DEFAULT_MODEL
    models: tuple[str, ...] = ()
    allow_remote_code: bool = False
    allow_hub_ids: bool = True
    allow_server_paths: bool = True
    allow_regex: bool = True
    max_texts_per_class: int = 6000
    max_samples: int = 25
    max_new_tokens: int = 256
    max_prompts: int = 2000
    max_upload_mb: int = 50
    max_token_budget: int = 512
    max_eval_samples: int = 25
    max_eval_completions: int = 1_000_000
    max_neutral_texts: int = 10_000
    max_bootstrap: int = 20_000
    max_sweep_points: int = 100
    max_upload_lines: int = 100_000

    def offered_models(self) -> tuple[str, ...]:
        """The models a browser may ask for by name (a link's ``?model=``, the Model page's list)."""
        if self.workshop:
            return tuple(dict.fromkeys((self.default_model, *self.models)))
        return tuple(dict.fromkeys((self.default_model, *PRESETS, *self.models)))

    def offers(self, model: str) -> bool:
        return model in self.offered_models()

    def over_cap(self, cap: str, asked: int, what: str) -> str | None:
        """A one-line note naming the cap that ``asked`` exceeds, or None within it.

        >>> ServerConfig(max_prompts=100).over_cap("max_prompts", 500, "prompts")
        'Asked for 500 prompts: this server allows at most 100 (its cap max_prompts).'
        """
        most = int(getattr(self, cap))
        if asked <= most:
            return None
        return f"Asked for {asked:,} {what}: this server allows at most {most:,} (its cap {cap})."


# The defaults that workshop mode changes; a file or variable can still set each. Each cap keeps one
# visitor's request to a few minutes of a 2-core server, which decodes about 200 tokens/s for everyone:
_WORKSHOP = {
    "allow_hub_ids": False,
    "allow_server_paths": False,
    # Units by family and layer range only: a visitor's own pattern is matched with a time limit, but
    # a family is all a workshop needs and leaves nothing to tune against the limit.
    "allow_regex": False,
    "max_texts_per_class": 200,
    "max_samples": 10,
    "max_new_tokens": 64,
    "max_prompts": 100,
    "max_upload_mb": 5,
    # 200 texts per class of 128 tokens is 51,200 tokens read (not decoded), well under a minute.
    "max_token_budget": 128,
    # Evaluate: 100 prompts x 4 completions x the default 6 conditions = 2,400 completions of about
    # 20 tokens, 48,000 tokens, about 4 minutes; more conditions need fewer prompts.
    "max_eval_samples": 4,
    "max_eval_completions": 2_400,
    # Perplexity reads each neutral text once per method; the project's own neutral text has 66.
    "max_neutral_texts": 100,
    # Resampling is arithmetic on the scores: 2,000 resamples take about a second per condition.
    "max_bootstrap": 2_000,
    # Each sweep point is one more condition of the whole prompt set.
    "max_sweep_points": 4,
    # An uploaded density corpus is read whole by the model: 1,000 lines of up to 128 tokens.
    "max_upload_lines": 1_000,
}

_ENV = {
    "AURA_WORKSHOP": "workshop",
    "AURA_STUDIO_MODEL": "default_model",
    "AURA_STUDIO_MODELS": "models",
    "AURA_ALLOW_REMOTE_CODE": "allow_remote_code",
    "AURA_ALLOW_HUB_IDS": "allow_hub_ids",
    "AURA_ALLOW_SERVER_PATHS": "allow_server_paths",
    "AURA_ALLOW_REGEX": "allow_regex",
    "AURA_MAX_TEXTS_PER_CLASS": "max_texts_per_class",
    "AURA_MAX_SAMPLES": "max_samples",
    "AURA_MAX_NEW_TOKENS": "max_new_tokens",
    "AURA_MAX_PROMPTS": "max_prompts",
    "AURA_MAX_UPLOAD_MB": "max_upload_mb",
    "AURA_MAX_TOKEN_BUDGET": "max_token_budget",
    "AURA_MAX_EVAL_SAMPLES": "max_eval_samples",
    "AURA_MAX_EVAL_COMPLETIONS": "max_eval_completions",
    "AURA_MAX_NEUTRAL_TEXTS": "max_neutral_texts",
    "AURA_MAX_BOOTSTRAP": "max_bootstrap",
    "AURA_MAX_SWEEP_POINTS": "max_sweep_points",
    "AURA_MAX_UPLOAD_LINES": "max_upload_lines",
}


def _coerce(name: str, value: object, where: str) -> object:
    kind = {f.name: f.type for f in fields(ServerConfig)}[name]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
    elif kind == "int":
        try:
            number = int(str(value))
        except ValueError:
            pass
        else:
            if number >= 1:
                return number
    elif kind == "str":
        if isinstance(value, str) and value.strip():
            return value.strip()
    else:  # tuple[str, ...]
        items = value if isinstance(value, list) else str(value).split(",")
        return tuple(str(item).strip() for item in items if str(item).strip())
    raise AuraError(f"{where}: {name} = {value!r} is not a valid {kind}")


def server_config(environ: Mapping[str, str] | None = None) -> ServerConfig:
    """The operator's settings from ``AURA_STUDIO_CONFIG`` and the environment (a clear error if malformed)."""
    env = os.environ if environ is None else environ
    chosen: dict[str, Any] = {}
    path = env.get("AURA_STUDIO_CONFIG")
    if path:
        try:
            table = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("studio", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise AuraError(f"AURA_STUDIO_CONFIG={path}: cannot be read as TOML ({err})") from err
        known = {f.name for f in fields(ServerConfig)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise AuraError(f"{path}: unknown setting {unknown[0]!r} in [studio]; known: {', '.join(sorted(known))}")
        chosen.update({name: _coerce(name, value, path) for name, value in table.items()})
    for variable, name in _ENV.items():
        if variable in env:
            chosen[name] = _coerce(name, env[variable], variable)
    workshop = bool(chosen.get("workshop", False))
    base = replace(ServerConfig(), **_WORKSHOP) if workshop else ServerConfig()  # type: ignore[arg-type]
    return replace(base, **chosen)
