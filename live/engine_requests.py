"""What a site's show will ask TensorRT for, so ``build-engines --config`` builds exactly that.

The site config is resolved the way ``run --config`` resolves it (calibration profile, config,
start preset; see ``live.cli``), then every look the show can reach is collected:

- **sizes**: the dream size, and when the governor is on, every size on its ladder (it may
  shrink the dream at any time, and a size without a plan would otherwise be built mid-show);
- **layer sets**: the objective, every preset the config names (start, cycle, idle) and the
  idle look; with ``morph_time`` the fades between them too, since a cross-fade dreams both
  looks' layers at once (a layer set of its own);
- **model, weights, device, precision, backend** as the show takes them.

Sizes are rounded and precisions decided later by the same functions ``run`` uses
(:func:`live.dreamsize.dream_shape`, :func:`live.backends.resolve_precision`).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

from live.app import ShowOptions, _governor
from live.control.params import Registry
from live.control.presets import PresetStore
from live.errors import LiveError
from live.governor import Setting
from live.objectives import Objective
from live.site import Site

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineRequest:
    """The plans one show needs: every layer set at every size, for one model and precision."""

    model: str
    weights: str | None
    device: str
    precision: str | None
    backend: str
    sizes: list[tuple[int, int]]
    layer_sets: list[tuple[str, ...]]


def show_engine_request(opts: ShowOptions, registry: Registry, site: Site | None) -> EngineRequest:
    """The plans the show set up by ``opts`` and ``registry`` (as ``run`` built them) can ask for."""
    snap = registry.snapshot()
    looks: list[dict[str, object]] = [{"objective": snap.objective, "width": snap.width, "height": snap.height}]
    names: list[str] = []
    if site is not None:
        names = [n for n in (site.presets.start, *site.presets.cycle, site.idle.preset) if n]
    store = PresetStore(registry, opts.presets_dir)
    for name in dict.fromkeys(names):
        try:
            looks.append(store.read(name))
        except LiveError as e:  # run would fail on it too, but only when it gets there: say so now
            log.warning("preset %s is not built for: %s", name, e)
    if opts.idle_values:
        looks.append({k: registry.param(k).coerce(v) for k, v in opts.idle_values.items()})

    objectives: list[Objective] = []
    sizes: list[tuple[int, int]] = []
    for look in looks:
        objective = look.get("objective", snap.objective)
        if isinstance(objective, Objective) and objective not in objectives:
            objectives.append(objective)
        size = (int(look.get("width", snap.width)), int(look.get("height", snap.height)))  # type: ignore[call-overload]
        if size not in sizes:
            sizes.append(size)
    layer_sets = list(dict.fromkeys(o.layers for o in objectives))
    if snap.morph_time > 0:
        for a, b in itertools.combinations(objectives, 2):
            layer_sets.append((a + b).layers)  # what a cross-fade dreams: both looks' layers
        layer_sets = list(dict.fromkeys(layer_sets))

    governor = _governor(opts)  # the very governor run builds from these options
    if governor is not None:
        for w, h in list(sizes):
            for setting in governor.ladder(Setting(max(int(snap.steps), 1), w, h)):
                if (setting.width, setting.height) not in sizes:
                    sizes.append((setting.width, setting.height))
    return EngineRequest(
        model=opts.model, weights=opts.weights, device=opts.device, precision=opts.precision,
        backend=opts.backend, sizes=sizes, layer_sets=layer_sets,
    )
