"""What the dream maximises: a weighted sum over layers and channels of mean squared activations.

    score = Σ_l Σ_c w[l, c] · mean_{y,x}(act[l][c]²)

An :class:`Objective` is just those numbers (one weight vector per layer), so switching layer,
focusing a channel or cross-fading between two objectives is arithmetic on weights: backends
take them as runtime inputs and never rebuild for them.

String form, as typed on the command line or sent over OSC::

    inception4c                 the whole layer (every channel weighted 1/C)
    inception4c:97              one channel
    inception4c:97,12  4c:0..9  several channels, a range
    0.5*inception3b + mixed4c   weighted sums (aliases resolve to catalog names)
    pool1/norm1                 a layer only the BVLC model has (``check`` tells which model lacks it)

Checked at the edge, whoever types it (command line, config, OSC, a preset): a weight must be a
finite number of at most ``MAX_WEIGHT`` in size (``1e999*inception4c`` is infinity and would
turn the dream black), and so must each layer's weights added up after the terms are merged
(``1000*inception4c:0`` a hundred times is 100,000 on one channel). The constructor, whoever
calls it, refuses non-finite weights and any one channel's weight above ``MAX_WEIGHT``; a channel
range must run
upwards (``inception4c:1..9``), and an objective whose weights are all zero (``0*inception4c``)
is accepted with a warning, once per objective: the dream leaves the picture as it is.

The work a text can cause is bounded before it is read (docs/architecture.md, *Doors*): at most
``MAX_TEXT`` characters, ``MAX_TERMS`` terms, ``MAX_CHANNEL_ITEMS`` channels and ranges in all
(each range at most a layer's width, marked in a weight vector without building a list) and
numbers of at most ``MAX_DIGITS`` digits.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping

import numpy as np

from live.errors import UsageError
from live.model import catalog

log = logging.getLogger(__name__)

# The step is normalised by the gradient's mean size, so only the ratios between terms matter;
# a weight of a thousand already drowns every other term. Larger ones are typos (or attacks on
# fp16, whose largest number is 65504).
MAX_WEIGHT = 1000.0
MAX_TEXT = 2048  # characters of an objective's text; a long channel list is a few hundred
MAX_TERMS = 32  # weighted terms (layers or channel sets) in one objective
MAX_CHANNEL_ITEMS = 256  # channels and ranges in all the terms' lists together
MAX_DIGITS = 12  # digits in one number (a channel, a range end, a weight)
_WEIGHT_SLACK = 1.0 + 1e-4  # float32 sums of a layer's 1/C weights land a hair above their total
_ZERO_WARNED: set[str] = set()  # objectives already warned about (bounded: see _warn_if_zero)
_ZERO_WARNED_MAX = 256
_ZERO_WARN_EVERY = 10.0  # s between two such warnings about different texts: a sender cycling them is not a log flood
_zero_warned_at = [-math.inf]


class Objective:
    """Per-layer channel weights (canonical layer name → float32 vector of the layer's width).

    Immutable by convention: every operation returns a new objective.
    """

    __slots__ = ("_terms",)

    def __init__(self, terms: Mapping[str, np.ndarray]) -> None:
        checked: dict[str, np.ndarray] = {}
        for name, weights in terms.items():
            layer = catalog.resolve(name)
            w = np.asarray(weights, dtype=np.float32)
            if w.shape != (layer.channels,):
                raise UsageError(f"weights for {layer.name} must have {layer.channels} entries, got shape {w.shape}")
            if not np.isfinite(w).all():
                raise UsageError(f"weights for {layer.name} must be finite numbers; got NaN or infinity")
            checked[layer.name] = checked.get(layer.name, 0) + w
        for name, w in checked.items():
            largest = float(np.abs(w).max(initial=0.0))
            if largest > MAX_WEIGHT * _WEIGHT_SLACK:
                raise UsageError(f"a weight for {name} is {largest:g}; weights are at most {MAX_WEIGHT:g}")
        self._terms = dict(sorted(checked.items(), key=lambda kv: catalog.depth(kv[0])))

    # ----- construction
    @classmethod
    def layer(cls, name: str) -> Objective:
        """The whole layer: mean of the squared activations over all channels."""
        layer = catalog.resolve(name)
        return cls({layer.name: np.full(layer.channels, 1.0 / layer.channels, np.float32)})

    @classmethod
    def channels(cls, name: str, channels: list[int]) -> Objective:
        """Only the given channels of a layer, each weighted 1/len(channels)."""
        layer = catalog.resolve(name)
        bad = [c for c in channels if not 0 <= c < layer.channels]
        if bad:
            raise UsageError(f"{layer.name} has {layer.channels} channels (0..{layer.channels - 1}); got {bad[0]}")
        w = np.zeros(layer.channels, np.float32)
        w[channels] = 1.0 / len(set(channels))
        return cls({layer.name: w})

    @classmethod
    def parse(cls, text: str, model: str | None = None) -> Objective:
        """Parse the string form (see the module docstring); errors say what was expected.

        Without ``model`` a layer of any supported network is accepted (the parameter registry
        parses before a network is chosen); with it, see :meth:`check`.
        """
        objective = _parse(text)
        _warn_if_zero(objective, text)
        return objective.check(model) if model is not None else objective

    def check(self, model: str) -> Objective:
        """Return this objective if the network ``model`` has all its layers, else raise
        :class:`UsageError` naming the network that has the missing one (``norm1`` is BVLC-only)."""
        catalog.for_model(model).check(self._terms)
        return self

    # ----- reading
    @property
    def terms(self) -> dict[str, np.ndarray]:
        """Layer → weights, shallowest layer first. Copies: callers cannot change this objective."""
        return {k: v.copy() for k, v in self._terms.items()}

    @property
    def layers(self) -> tuple[str, ...]:
        """Canonical names of the layers with a term, shallowest first."""
        return tuple(self._terms)

    def weights(self, layer: str) -> np.ndarray:
        return self._terms[layer].copy()

    @property
    def is_zero(self) -> bool:
        """True when every weight is zero: the dream then leaves the picture unchanged."""
        return not any(np.any(w) for w in self._terms.values())

    # ----- algebra
    def __add__(self, other: Objective) -> Objective:
        merged = dict(self._terms)
        for k, v in other._terms.items():
            merged[k] = merged[k] + v if k in merged else v
        return Objective(merged)

    def __mul__(self, k: float) -> Objective:
        return Objective({name: w * np.float32(k) for name, w in self._terms.items()})

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return self * -1.0

    def __sub__(self, other: Objective) -> Objective:
        return self + (-other)

    def lerp(self, other: Objective, t: float) -> Objective:
        """Cross-fade: ``(1 - t) · self + t · other``; both layer sets stay present during the fade."""
        t = float(np.clip(t, 0.0, 1.0))
        return self * (1.0 - t) + other * t

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Objective) and self._terms.keys() == other._terms.keys() and all(
            np.array_equal(v, other._terms[k]) for k, v in self._terms.items()
        )

    def __hash__(self) -> int:
        return hash(tuple((k, v.tobytes()) for k, v in self._terms.items()))

    def __str__(self) -> str:
        parts = []
        for name, w in self._terms.items():
            nz = np.flatnonzero(w)
            if not len(nz):
                parts.append(f"0*{name}")
                continue
            if len(nz) == len(w) and np.allclose(w, w[0]):
                coef, atom = float(w[0]) * len(w), name
            elif len(nz) and np.allclose(w[nz], w[nz[0]]):
                coef, atom = float(w[nz[0]]) * len(nz), f"{name}:{','.join(map(str, nz))}"
            else:
                coef, atom = 1.0, f"{name}:<{len(nz)} weighted channels>"
            parts.append(atom if abs(coef - 1.0) < 1e-6 else f"{coef:g}*{atom}")
        return " + ".join(parts) or "<empty>"

    def __repr__(self) -> str:
        return f"Objective({str(self)!r})"


_N = r"\d{1,%d}" % MAX_DIGITS  # a number's digits, bounded: int() of 5000 digits raises ValueError
_TOKEN = re.compile(
    rf"\s*(?:(?P<num>{_N}(?:\.\d{{0,{MAX_DIGITS}}})?(?:[eE][-+]?\d{{1,4}})?|\.{_N}(?:[eE][-+]?\d{{1,4}})?)"
    rf"|(?P<name>[A-Za-z][A-Za-z0-9_/]{{0,63}})(?::(?P<ch>{_N}(?:\.\.{_N})?(?:,{_N}(?:\.\.{_N})?)*))?"
    r"|(?P<op>[-+*]))"
)


def _warn_if_zero(objective: Objective, text: str) -> None:
    if not objective.is_zero:
        return
    key = " ".join(text.split())
    if key in _ZERO_WARNED:
        return
    if len(_ZERO_WARNED) >= _ZERO_WARNED_MAX:  # a controller cycling through typos must not grow this forever
        _ZERO_WARNED.clear()
    _ZERO_WARNED.add(key)
    now = time.monotonic()
    if now - _zero_warned_at[0] < _ZERO_WARN_EVERY:
        return
    _zero_warned_at[0] = now
    log.warning("objective %r has all its weights at zero: the dream will leave the picture unchanged "
                "(give a layer a non-zero weight, e.g. inception4c)", text)


def _weight(text: str, source: str) -> float:
    """A coefficient from the objective's text: finite and at most MAX_WEIGHT in size."""
    value = float(text)
    if not math.isfinite(value):
        raise UsageError(f"objective {source!r}: the weight {text} is not a finite number; "
                         f"weights are finite numbers up to {MAX_WEIGHT:g}, e.g. 0.5*inception3b")
    if abs(value) > MAX_WEIGHT:
        raise UsageError(f"objective {source!r}: the weight {text} is out of range; weights are at most "
                         f"{MAX_WEIGHT:g} (only their ratios matter), e.g. 2*inception4c + inception3b")
    return value


def _quote(text: str, limit: int = 60) -> str:
    """``text`` quoted for an error message, cut to about ``limit`` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"… ({len(text)} characters)"


def _parse(text: str) -> Objective:
    expected = "expected e.g. 'inception4c', 'inception4c:97', '0.5*inception3b + inception4c'"
    if len(text) > MAX_TEXT:
        raise UsageError(f"objective of {len(text)} characters; at most {MAX_TEXT}, {expected}")
    pos, tokens = 0, []
    stripped = text.rstrip()
    while pos < len(stripped):
        m = _TOKEN.match(stripped, pos)
        if not m or m.end() == pos:
            raise UsageError(f"cannot read objective {_quote(text)} at {_quote(stripped[pos:], 20)}; {expected}")
        tokens.append(m)
        pos = m.end()
    if not tokens:
        raise UsageError(f"empty objective; {expected}")
    names = sum(1 for m in tokens if m["name"] is not None)
    if names > MAX_TERMS:
        raise UsageError(f"objective {_quote(text)} has {names} terms; at most {MAX_TERMS}")
    items = sum(m["ch"].count(",") + 1 for m in tokens if m["ch"] is not None)
    if items > MAX_CHANNEL_ITEMS:
        raise UsageError(f"objective {_quote(text)} lists {items} channels and ranges; at most {MAX_CHANNEL_ITEMS} "
                         "(a range such as inception4c:0..99 counts once)")
    if len(text) > 60:  # errors below quote it; a long one in part
        text = f"{text[:60]}… ({len(text)} characters)"

    total: Objective | None = None
    i, sign = 0, 1.0
    while i < len(tokens):
        coef = sign
        atom: Objective | None = None
        # term := [num '*'] atom ['*' num]
        if tokens[i]["num"] is not None:
            if i + 2 >= len(tokens) or tokens[i + 1]["op"] != "*":
                raise UsageError(f"objective {text!r}: a number must be followed by '*' and a layer; {expected}")
            coef *= _weight(tokens[i]["num"], text)
            i += 2
        if i >= len(tokens) or tokens[i]["name"] is None:
            raise UsageError(f"objective {text!r}: expected a layer name; {expected}")
        atom = _atom(tokens[i]["name"], tokens[i]["ch"], text)
        i += 1
        if i + 1 < len(tokens) and tokens[i]["op"] == "*" and tokens[i + 1]["num"] is not None:
            coef *= _weight(tokens[i + 1]["num"], text)
            i += 2
        if abs(coef) > MAX_WEIGHT:  # 1000*inception4c*1000
            raise UsageError(f"objective {text!r}: a term's weight is {coef:g}; weights are at most {MAX_WEIGHT:g}")
        term = atom * coef
        try:
            total = term if total is None else total + term
        except UsageError as e:  # one channel's merged weight past the limit
            raise UsageError(f"objective {text!r}: {e} (a layer's weights add up to at most {MAX_WEIGHT:g})") from None
        _check_merged(total, text)
        if i < len(tokens):
            op = tokens[i]["op"]
            if op not in ("+", "-"):
                raise UsageError(f"objective {text!r}: expected '+' or '-' between terms; {expected}")
            if i + 1 == len(tokens):
                raise UsageError(f"objective {text!r}: expected a term after {op!r}; {expected}")
            sign = 1.0 if op == "+" else -1.0
            i += 1
    assert total is not None
    return total


def _check_merged(objective: Objective, text: str) -> None:
    """Each layer's weights added up (what a single term's coefficient is) at most ``MAX_WEIGHT``:
    ``1000*inception4c:0`` repeated stays within the per-term limit but not within this one."""
    for name, w in objective._terms.items():
        total = float(np.abs(w, dtype=np.float64).sum())
        if total > MAX_WEIGHT * _WEIGHT_SLACK:
            raise UsageError(f"objective {text!r}: the weights for {name} add up to {total:g}; a layer's weights "
                             f"add up to at most {MAX_WEIGHT:g} (only their ratios matter), e.g. 2*inception4c + "
                             "inception3b")


def _atom(name: str, channel_text: str | None, source: str) -> Objective:
    if channel_text is None:
        return Objective.layer(name)
    layer = catalog.resolve(name)
    chosen = np.zeros(layer.channels, bool)  # marked in place: a list of 0..511 repeated would cost 100 MB
    for part in channel_text.split(","):
        lo, _, hi = part.partition("..")
        if hi and int(hi) < int(lo):
            raise UsageError(f"objective {source!r}: the channel range {part} runs backwards; write it "
                             f"low to high, e.g. {layer.name}:{hi}..{lo}")
        first, last = int(lo), int(hi) if hi else int(lo)
        if last >= layer.channels:
            raise UsageError(f"{layer.name} has {layer.channels} channels (0..{layer.channels - 1}); got {last}")
        chosen[first : last + 1] = True
    w = np.zeros(layer.channels, np.float32)
    w[chosen] = 1.0 / int(chosen.sum())
    return Objective({layer.name: w})
