"""Variant specs: the grammar that names a compression chain in one word.

A spec is one step or several joined with '+'. A step is a word, an optional
positional value and optional KEY=VALUE options, all separated by ':', so
that a comma-separated list of specs needs no quoting:

    prune:0.8+int8    distill:0.5:data=population+int4    int8:calibration=entropy

Training steps (l2, dropout, label-smoothing, early-stop, dp-sgd, pate) are
privacy defenses: they change how the float model is trained, so they come
first, and the model is trained anew from the recipe with all of them
together. Because they train together, their order carries no meaning, and
the canonical name lists them in the order of WORDS (l2, dropout,
label-smoothing, early-stop, dp-sgd, pate). Model steps (prune, prune-structured, distill) change the Keras
model and run left to right. The export step (float, int8, int8-dynamic,
int16x8, int4) decides the exported files. A chain has at most one export
step, and it comes last. A chain without one exports float32.

The canonical name of a spec writes every step with its positional value and
only the options that differ from their defaults, so two spellings of one
variant get one name. File and directory names use the canonical name with
':' replaced by '_' (see VariantSpec.slug), because ':' is not allowed in
Windows paths; '_' never occurs in a canonical name, so the mapping is
one to one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from edgemia.errors import InputError
from edgemia.training.dp import DEFAULT_SETTINGS as DP_SGD_DEFAULTS

GRAMMAR = """\
Variant grammar: STEP[+STEP...], where STEP is WORD[:VALUE][:KEY=VALUE...]
  Training steps (defenses), first in a chain, at most one of each and in any order; the
  float model is trained anew with all of them, the target and every reference model alike:
    l2:LAMBDA              L2 penalty LAMBDA * sum(w^2) on every kernel (0 < LAMBDA <= 1)
    dropout:P              dropout with rate P (0 < P < 1) after every hidden layer
    label-smoothing:A      train on labels smoothed by A (0 < A < 1)
    early-stop             stop when the loss on a held-out split of the training records
                           stops falling; options holdout=F (default 0.2), patience=N (default 10)
    dp-sgd                 DP-SGD: per-example gradients clipped to norm C, Gaussian noise,
                           Poisson sampling; options eps=E (target epsilon) or noise=SIGMA
                           (noise multiplier), one of them required, delta=D (default 1e-05),
                           clip=C (default 1), epochs=N (default 20), batch=N (expected
                           batch size, default 128) and lr=X (Adam learning rate, default
                           0.01), DP-SGD's own settings rather than the recipe's
    pate                   PATE: teachers on disjoint partitions of the training records
                           label the population records by noisy argmax (Gaussian noise
                           sigma), and a student learns only from those; options teachers=N
                           (2..1000, default 10), noise=SIGMA (default 1), delta=D (default 1e-05);
                           needs population records
  Model steps, applied left to right, each to the target and to every reference model:
    prune:S                unstructured magnitude pruning to sparsity S (0 <= S < 1) with a
                           polynomial schedule during fine-tuning;
                           options scope=global|layer (default global), epochs=N (default 20)
    prune-structured:S     remove the fraction S (0 < S < 1) of units and filters with the
                           smallest L1 norm, then fine-tune; option epochs=N (default 20)
    distill:W              train a student W times as wide (0 < W <= 4) on the model's
                           softened outputs; options temperature=T (default 4),
                           data=members|population (default members), epochs=N (default 80)
  Export step, at most one and last (a chain without one exports float):
    float                  float32 TFLite and ONNX
    int8                   full-integer int8: TFLite converter, and ONNX QDQ per-channel;
                           option calibration=minmax|entropy|percentile (default minmax, ONNX only)
    int8-dynamic           dynamic-range int8 weights with float activations: TFLite and ONNX
    int16x8                TFLite with 16-bit activations and 8-bit weights
    int4                   block-wise 4-bit weights: ONNX MatMulNBits, and TFLite when
                           ai-edge-quantizer is installed; option block=32|64|128|256 (default 32)
  Examples: float, int8, int4, prune:0.5, prune:0.8+int8, distill:0.5+int4, int8:calibration=entropy,
    dp-sgd:eps=8+prune:0.5+int8, l2:0.001+dropout:0.2+int8, pate:teachers=20+int8"""

# The variants `edgemia audit` compares when --variants is not given.
DEFAULT_VARIANTS = ("float", "int8", "int4", "prune:0.5", "prune:0.8+int8")

TRAINING_STEP = "training"
MODEL_STEP = "model"
EXPORT_STEP = "export"


def _check_number_text(text: str) -> None:
    """Raise ValueError for the '_' digit separators that Python's int() and float() accept."""
    if "_" in text:
        raise ValueError(f"'{text}' is not a number: write it without '_' separators")


def _fraction(low_inclusive: bool, high: float, high_inclusive: bool) -> Callable[[str], float]:
    low_text = "0 <=" if low_inclusive else "0 <"
    high_text = f"<= {high:g}" if high_inclusive else f"< {high:g}"

    def parse(text: str) -> float:
        _check_number_text(text)
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a number") from None
        above_low = value >= 0 if low_inclusive else value > 0
        below_high = value <= high if high_inclusive else value < high
        if not (math.isfinite(value) and above_low and below_high):
            raise ValueError(f"{text} is outside {low_text} x {high_text}")
        return value

    return parse


def _positive_int(maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        _check_number_text(text)
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"'{text}' is not an integer") from None
        if not 1 <= value <= maximum:
            raise ValueError(f"{value} is outside 1..{maximum}")
        return value

    return parse


def _positive(maximum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        _check_number_text(text)
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a number") from None
        if not (math.isfinite(value) and 0 < value <= maximum):
            raise ValueError(f"{text} is outside 0 < x <= {maximum:g}")
        return value

    return parse


def _integer(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        _check_number_text(text)
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"'{text}' is not an integer") from None
        if not minimum <= value <= maximum:
            raise ValueError(f"{value} is outside {minimum}..{maximum}")
        return value

    return parse


def _choice(*values: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(f"'{text}' is not one of {', '.join(values)}")
        return text

    return parse


def _block_size(text: str) -> int:
    if text not in ("32", "64", "128", "256"):
        raise ValueError(f"'{text}' is not one of 32, 64, 128, 256")
    return int(text)


@dataclass(frozen=True)
class Parameter:
    """One value a step accepts: its name, parser and default (None: required)."""

    name: str
    parse: Callable[[str], object]
    default: object = None


@dataclass(frozen=True)
class Word:
    """A step word: whether it changes the model or exports it, and the values it accepts."""

    kind: str  # TRAINING_STEP, MODEL_STEP or EXPORT_STEP
    positional: Parameter | None = None
    options: tuple[Parameter, ...] = ()
    # Checks the step's values together; returns an error text, or None when they are valid.
    check: Callable[[dict], str | None] | None = None


def _check_dp_sgd(values: dict) -> str | None:
    if values["eps"] is None and values["noise"] is None:
        return "dp-sgd needs eps=E (the target epsilon) or noise=SIGMA (the noise multiplier), e.g. dp-sgd:eps=8"
    if values["eps"] is not None and values["noise"] is not None:
        return (f"dp-sgd takes eps={values['eps']:g} or noise={values['noise']:g}, not both; "
                "the noise multiplier follows from the target epsilon")
    return None


WORDS: dict[str, Word] = {
    "l2": Word(TRAINING_STEP, positional=Parameter("lambda", _positive(1.0))),
    "dropout": Word(TRAINING_STEP, positional=Parameter("rate", _fraction(False, 1.0, False))),
    "label-smoothing": Word(TRAINING_STEP, positional=Parameter("alpha", _fraction(False, 1.0, False))),
    "early-stop": Word(
        TRAINING_STEP,
        options=(Parameter("holdout", _fraction(False, 0.5, True), 0.2), Parameter("patience", _positive_int(10_000), 10)),
    ),
    "dp-sgd": Word(
        TRAINING_STEP,
        options=(
            Parameter("eps", _positive(1e6), None),
            Parameter("delta", _fraction(False, 1.0, False), 1e-5),
            Parameter("clip", _positive(1e6), 1.0),
            Parameter("noise", _positive(1e6), None),
            Parameter("epochs", _positive_int(10_000), DP_SGD_DEFAULTS.epochs),
            Parameter("batch", _positive_int(100_000), DP_SGD_DEFAULTS.batch_size),
            Parameter("lr", _positive(10.0), DP_SGD_DEFAULTS.learning_rate),
        ),
        check=_check_dp_sgd,
    ),
    "pate": Word(
        TRAINING_STEP,
        options=(
            Parameter("teachers", _integer(2, 1000), 10),
            Parameter("noise", _positive(1e6), 1.0),
            Parameter("delta", _fraction(False, 1.0, False), 1e-5),
        ),
    ),
    "float": Word(EXPORT_STEP),
    "int8": Word(EXPORT_STEP, options=(Parameter("calibration", _choice("minmax", "entropy", "percentile"), "minmax"),)),
    "int8-dynamic": Word(EXPORT_STEP),
    "int16x8": Word(EXPORT_STEP),
    "int4": Word(EXPORT_STEP, options=(Parameter("block", _block_size, 32),)),
    "prune": Word(
        MODEL_STEP,
        positional=Parameter("sparsity", _fraction(True, 1.0, False)),
        options=(Parameter("scope", _choice("global", "layer"), "global"), Parameter("epochs", _positive_int(10_000), 20)),
    ),
    "prune-structured": Word(
        MODEL_STEP,
        positional=Parameter("fraction", _fraction(False, 1.0, False)),
        options=(Parameter("epochs", _positive_int(10_000), 20),),
    ),
    "distill": Word(
        MODEL_STEP,
        positional=Parameter("width", _fraction(False, 4.0, True)),
        options=(
            Parameter("temperature", _fraction(False, 100.0, True), 4.0),
            Parameter("data", _choice("members", "population"), "members"),
            Parameter("epochs", _positive_int(10_000), 80),
        ),
    ),
}


def _format_value(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Step:
    """One parsed step: its word and every parameter value, defaults filled in."""

    word: str
    values: tuple[tuple[str, object], ...]

    def __getitem__(self, name: str) -> object:
        return dict(self.values)[name]

    @property
    def kind(self) -> str:
        return WORDS[self.word].kind

    def __str__(self) -> str:
        word = WORDS[self.word]
        values = dict(self.values)
        parts = [self.word]
        if word.positional is not None:
            parts.append(_format_value(values[word.positional.name]))
        for option in word.options:
            if values[option.name] != option.default:
                parts.append(f"{option.name}={_format_value(values[option.name])}")
        return ":".join(parts)

    def to_dict(self) -> dict:
        return {"word": self.word, **dict(self.values)}


@dataclass(frozen=True)
class VariantSpec:
    """A parsed variant: model steps in order, then one export step."""

    model_steps: tuple[Step, ...]
    export: Step

    @property
    def name(self) -> str:
        """The canonical spec, e.g. 'prune:0.8+int8'; a chain that ends in float omits '+float'."""
        steps = [str(step) for step in self.model_steps]
        if not steps or self.export.word != "float":
            steps.append(str(self.export))
        return "+".join(steps)

    @property
    def slug(self) -> str:
        """The canonical name as a file or directory name: ':' becomes '_'."""
        return self.name.replace(":", "_")

    def prefix(self, count: int) -> str:
        """Canonical text of the first `count` model steps, the key of the model they produce."""
        return "+".join(str(step) for step in self.model_steps[:count])

    @property
    def uses_population(self) -> bool:
        return any(
            (step.word == "distill" and step["data"] == "population") or step.word == "pate"
            for step in self.model_steps
        )

    @property
    def training_steps(self) -> tuple[Step, ...]:
        """The leading training steps (defenses); empty for a model trained with the plain recipe."""
        return tuple(step for step in self.model_steps if step.kind == TRAINING_STEP)

    @property
    def defense(self) -> str:
        """Canonical text of the training steps, e.g. 'dp-sgd:eps=8'; '' without any."""
        return "+".join(str(step) for step in self.training_steps)

    @property
    def compression_name(self) -> str:
        """The canonical name of this variant without its training steps: its compression recipe."""
        return VariantSpec(
            model_steps=tuple(step for step in self.model_steps if step.kind != TRAINING_STEP), export=self.export
        ).name

    def to_dict(self) -> dict:
        return {"name": self.name, "steps": [step.to_dict() for step in (*self.model_steps, self.export)]}


def _invalid(text: str, reason: str) -> InputError:
    return InputError(f"invalid variant '{text}': {reason}\n{GRAMMAR}")


def _parse_step(spec_text: str, text: str) -> Step:
    parts = text.split(":")
    word_text, arguments = parts[0], parts[1:]
    if word_text not in WORDS:
        raise _invalid(spec_text, f"unknown word '{word_text}'; valid words: {', '.join(WORDS)}")
    word = WORDS[word_text]
    values: dict[str, object] = {}
    if word.positional is not None:
        if not arguments or "=" in arguments[0]:
            raise _invalid(spec_text, f"'{word_text}' needs a {word.positional.name}, e.g. {word_text}:0.5")
        try:
            values[word.positional.name] = word.positional.parse(arguments[0])
        except ValueError as exc:
            raise _invalid(spec_text, f"{word_text}: {word.positional.name} {exc}") from None
        arguments = arguments[1:]
    options = {option.name: option for option in word.options}
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if not equals:
            raise _invalid(spec_text, f"'{word_text}' takes no value '{argument}'; options are written KEY=VALUE")
        if key not in options:
            valid = ", ".join(options) if options else "none"
            raise _invalid(spec_text, f"'{word_text}' has no option '{key}'; its options: {valid}")
        if key in values:
            raise _invalid(spec_text, f"{word_text}: option '{key}' is given twice")
        try:
            values[key] = options[key].parse(value)
        except ValueError as exc:
            raise _invalid(spec_text, f"{word_text}: {key} {exc}") from None
    for option in word.options:
        values.setdefault(option.name, option.default)
    if word.check is not None:
        problem = word.check(values)
        if problem is not None:
            raise _invalid(spec_text, problem)
    order = [p.name for p in ((word.positional,) if word.positional else ()) + word.options]
    return Step(word=word_text, values=tuple((name, values[name]) for name in order))


def _check_training_steps(text: str, steps: list[Step]) -> None:
    """Reject training steps after other steps, repeated ones, and combinations that cannot train together."""
    training = [step.word for step in steps if step.kind == TRAINING_STEP]
    first_other = next((i for i, step in enumerate(steps) if step.kind != TRAINING_STEP), len(steps))
    late = [step.word for step in steps[first_other:] if step.kind == TRAINING_STEP]
    if late:
        raise _invalid(text, f"the training step '{late[0]}' comes after '{steps[first_other].word}'; training "
                             "steps change how the float model is trained, so they come first")
    repeated = sorted({word for word in training if training.count(word) > 1})
    if repeated:
        raise _invalid(text, f"the training step '{repeated[0]}' is given twice")
    if "dp-sgd" in training and "pate" in training:
        raise _invalid(text, "dp-sgd and pate are two ways to train the model; choose one")
    for private in ("dp-sgd", "pate"):
        if private in training and "early-stop" in training:
            raise _invalid(text, f"early-stop chooses the epoch on held-out training records, which {private}'s "
                                 "privacy accounting does not cover; drop one of them")


def parse_variant(text: str) -> VariantSpec:
    """Parse one variant spec; raise InputError, with the grammar in its message, when it is invalid."""
    text = text.strip()
    if not text:
        raise _invalid(text, "the spec is empty")
    signed = re.search(r"[:=]\+|\d[eE]\+", text)
    if signed:
        unsigned = re.sub(r"([:=]|\d[eE])\+", r"\1", text)
        raise _invalid(text, f"'+' separates steps, so a value cannot contain it (at '{signed.group()}'); "
                             f"write numbers without a '+' sign: '{unsigned}'")
    steps = []
    for part in text.split("+"):
        if not part.strip():
            raise _invalid(text, "a step between '+' signs is empty")
        steps.append(_parse_step(text, part.strip()))
    exports = [i for i, step in enumerate(steps) if step.kind == EXPORT_STEP]
    if len(exports) > 1:
        raise _invalid(text, f"it has {len(exports)} export steps ({', '.join(steps[i].word for i in exports)}); "
                             "a chain has at most one")
    if exports and exports[0] != len(steps) - 1:
        raise _invalid(text, f"the export step '{steps[exports[0]].word}' must come last")
    _check_training_steps(text, steps)
    # Training steps train together, so `dropout:0.2+l2:0.01` is the variant `l2:0.01+dropout:0.2`.
    training = [step for step in steps if step.kind == TRAINING_STEP]
    word_order = list(WORDS)
    steps[:len(training)] = sorted(training, key=lambda step: word_order.index(step.word))
    if exports:
        return VariantSpec(model_steps=tuple(steps[:-1]), export=steps[-1])
    return VariantSpec(model_steps=tuple(steps), export=_parse_step(text, "float"))


def parse_variants(texts: list[str]) -> list[VariantSpec]:
    """Parse a list of specs; raise InputError when one is invalid or two name the same variant."""
    if not texts:
        raise InputError(f"the variant list is empty\n{GRAMMAR}")
    specs = [parse_variant(text) for text in texts]
    seen: dict[str, str] = {}
    for text, spec in zip(texts, specs):
        if spec.name in seen:
            raise InputError(
                f"the variant list names {spec.name} more than once ('{seen[spec.name]}' and '{text}')"
            )
        seen[spec.name] = text
    return specs
