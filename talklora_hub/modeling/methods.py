"""The adapter methods: one MethodSpec per method, registered by the file that defines its layer class.

Everything that differs between methods is read from its spec: the layer class injection builds, the
settings' defaults and the method's own rules, how it routes (not at all, per token, or per sequence), its
label in cards, summaries, the CLI and the Space, and the settings rows its card shows. The four built-in
methods register themselves at the end of adapter_lora.py, adapter_moelora.py, adapter_talklora.py and
adapter_ttlora.py.

A method defined in a file of its own, outside this folder (a plugin), is imported with load_method_file(),
which makes it a sibling of these files so that its `from .adapter_base import AdaptedLinear` resolves.
save_pretrained then copies that file into the saved folder next to the bundle and writes a method_plugins.py
that imports it, so the saved model loads anywhere with trust_remote_code, like the built-in methods.

Part of the bundle that travels inside every saved model: standard library only.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

# How a method routes: "none" (one static update), "token" (a router weighs the experts at every token),
# "sequence" (with num_experts > 1, a router picks one expert per sequence; with one expert it is static).
ROUTING_KINDS = ("none", "token", "sequence")


@dataclasses.dataclass(frozen=True)
class MethodSetting:
    """A setting a method adds to AdapterSettings, kept in settings.method_settings[name] (saved in config.json
    with the rest, so a saved model reloads with it). A plugin declares its own; a built-in setting is a field
    of AdapterSettings instead.

    name: the key ("code_scale"); default: the value when not given (its type is the setting's type, an int
        also passing for a float; None accepts any JSON value); help: one line on what it does;
    check: check(value) is True for a valid value (after the type check); rule and fix complete its error:
        "`method_settings['code_scale']` {rule}, got {value!r}. Fix: {fix}".
    """

    name: str
    default: Any
    help: str
    check: Optional[Callable[[Any], bool]] = None
    rule: str = "is not valid"
    fix: str = "see the method's settings (its MethodSpec.settings)."


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """What a method is, for every part of the product that needs to know.

    name: the settings' `method` value ("talklora"); label: its display name ("TalkLoRA");
    reference: where it comes from ("arXiv 2604.06291"), shown beside the label in summaries;
    layer_class: the AdaptedLinear subclass injection puts in place of each target module, built as
        layer_class(base, name, settings, shared, **layer_arguments(target name, settings));
    routing: one of ROUTING_KINDS; description: one line for the CLI's help and the README;
    default_num_experts: E when the settings leave num_experts None; single_expert: E must be 1;
    experts_split_rank: each of the E experts owns r / E (so r must be divisible by E);
    shares_banks_by_default: share_expert_banks' default (one B bank per projection type for all layers);
    exclusive_fields: AdapterSettings fields only this method reads: another method is refused a non-default
        value for them; card_fields: the settings rows its card shows besides the shared ones (CARD_FIELDS);
    check: check(settings) raises a config_error for the method's own rules (after the shared rules);
    settings: the MethodSettings the method adds (AdapterSettings.method_settings holds their values).
    """

    name: str
    label: str
    layer_class: type
    routing: str = "none"
    reference: str = ""
    description: str = ""
    default_num_experts: int = 1
    single_expert: bool = False
    experts_split_rank: bool = True
    shares_banks_by_default: bool = False
    exclusive_fields: Tuple[str, ...] = ()
    card_fields: Tuple[str, ...] = ()
    check: Optional[Callable[[Any], None]] = None
    layer_arguments: Optional[Callable[[str, Any], Dict[str, Any]]] = None
    settings: Tuple[MethodSetting, ...] = ()

    @property
    def title(self) -> str:
        """'TalkLoRA (arXiv 2604.06291)', or the label alone."""
        return f"{self.label} ({self.reference})" if self.reference else self.label

    def routing_of(self, num_experts: int) -> str:
        """How a model with this method and num_experts routes: a per-sequence method with one expert is static."""
        return "none" if self.routing == "sequence" and num_experts <= 1 else self.routing

    def is_builtin(self) -> bool:
        """Defined in this folder (travels with every model), not a plugin file."""
        return Path(sys.modules[self.layer_class.__module__].__file__).resolve().parent == _HERE


# The settings rows every card shows, before the method's own card_fields.
CARD_FIELDS = ("method", "num_experts", "lora_dropout", "target_modules", "modules_to_save")

_HERE = Path(__file__).resolve().parent
_REGISTRY: Dict[str, MethodSpec] = {}
_PLUGINS_FILE = "method_plugins.py"
_LOADED = False  # _load_methods has imported the registering files


def register_method(spec: MethodSpec) -> MethodSpec:
    """Adds a method (or replaces one of the same name from the same module, as a re-import does)."""
    if spec.routing not in ROUTING_KINDS:
        raise ValueError(f"`routing` must be one of {list(ROUTING_KINDS)}, got {spec.routing!r}. Fix: say how "
                         f"method {spec.name!r} routes.")
    names = [setting.name for setting in spec.settings]
    if len(set(names)) != len(names) or not all(isinstance(s, MethodSetting) for s in spec.settings):
        raise ValueError(f"`settings` must be MethodSettings with distinct names, got {names!r}. Fix: declare each "
                         f"setting of method {spec.name!r} once, as MethodSetting(name, default, help, ...).")
    old = _REGISTRY.get(spec.name)
    if old is not None and old.layer_class.__module__ != spec.layer_class.__module__:
        raise ValueError(f"`name` must be unique among adapter methods, got {spec.name!r}, already registered by "
                         f"{old.layer_class.__module__}. Fix: give the new method another name.")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Removes a method added with register_method (a plugin a test or a session no longer wants listed)."""
    _REGISTRY.pop(name, None)


def _load_methods() -> None:
    """Imports the files that register methods: the built-in four, and a saved model's plugins. Once: method_spec
    runs on every forward (settings.is_routed), where five import statements each time are work for nothing."""
    global _LOADED
    if _LOADED:
        return
    from .adapter_lora import LoRALinear  # noqa: F401  (each adapter file registers its method on import)
    from .adapter_moelora import MoELoRALinear  # noqa: F401
    from .adapter_talklora import TalkLoRALinear  # noqa: F401
    from .adapter_ttlora import TTLoRALinear  # noqa: F401
    from .method_plugins import PLUGIN_FILES  # noqa: F401  (a saved model's own copy imports its plugin files)
    _LOADED = True


def method_names() -> List[str]:
    """Every registered method's name, sorted (not in import order, which differs between entry points)."""
    _load_methods()
    return sorted(_REGISTRY)


def method_spec(name: str) -> Optional[MethodSpec]:
    """The spec of a registered method, or None."""
    _load_methods()
    return _REGISTRY.get(name)


def load_method_file(path) -> Any:
    """Imports a method defined in its own file as a sibling of the bundle (its `from .adapter_base import ...`
    resolve here) and returns the module; the file registers its method with register_method."""
    path = Path(path).resolve()
    if not path.is_file() or path.suffix != ".py":
        raise ValueError(f"`path` must be a Python file defining an adapter method, got {str(path)!r}. Fix: pass "
                         "the .py file that calls register_method.")
    name = f"{__package__}.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def plugin_files(method: str) -> Dict[str, str]:
    """The files a saved model needs beyond the bundle to run `method`: {file name: text}; empty for a built-in
    method. A plugin's file is copied as is, and method_plugins.py imports it so that transformers' remote-code
    loader (which follows single-dot relative imports) fetches it with the rest."""
    spec = method_spec(method)
    if spec is None or spec.is_builtin():
        return {}
    source = Path(sys.modules[spec.layer_class.__module__].__file__)
    module = source.stem
    plugins = (f'"""Adapter methods defined outside the bundle that this saved model uses (written by '
               f'save_pretrained)."""\n\nfrom .{module} import {spec.layer_class.__name__}  # noqa: F401  '
               f'(registers method {spec.name!r})\n\nPLUGIN_FILES = ["{module}.py"]\n')
    return {source.name: source.read_text(), _PLUGINS_FILE: plugins}
