"""Release policy: rules on a report, a verdict and the exit code it maps to.

A policy is a TOML file with a `[rules]` table. Every key in it is one rule,
and a rule that is absent is not checked:

    max_auc_increase         largest allowed AUC increase of a compressed
                             variant over float on the same backend and
                             format, for any attack (versus_float.auc_difference)
    min_accuracy             smallest allowed accuracy on the non-members,
                             for every variant, backend and format
    max_tpr_at_0_1pct_fpr    largest allowed TPR at 0.1% FPR, for every row
                             and attack
    max_epsilon_lower_bound  largest allowed empirical epsilon lower bound,
                             for every row and attack
    max_subgroup_auc_gap     largest allowed AUC gap between two subgroups
                             of one subgroup attribute (disparate
                             vulnerability; class and prediction-outcome
                             slices are not subgroups)

An optional top-level `unmeasurable` key ("fail", the default, or "pass")
decides the outcome of a rule that has no measurable value, for example the
TPR at 0.1% FPR with fewer than 1,000 non-members.

Each rule's outcome is a dict with `rule`, `limit`, `observed` (the worst
value found, None when nothing was measurable), `status` ("pass", "fail"
or "not measurable"), `passed`, `where` (the row and attack of the worst
value) and `description`.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from edgemia.errors import InputError
from edgemia.stats.slices import CLASS_ATTRIBUTE, CORRECTNESS_ATTRIBUTE
from edgemia.util import sha256_file

# The FPR level of the max_tpr_at_0_1pct_fpr rule, as report.json keys it.
LOW_FPR_LEVEL = "0.001"

# Slices that every report has and that are not subgroups of the records.
_NON_SUBGROUP_ATTRIBUTES = frozenset({CLASS_ATTRIBUTE, CORRECTNESS_ATTRIBUTE})

# Rule name: (description, smallest valid limit, largest valid limit).
RULES: dict[str, tuple[str, float, float]] = {
    "max_auc_increase": ("AUC increase of a compressed variant over float, any attack", -1.0, 1.0),
    "min_accuracy": ("accuracy on the non-members, every variant", 0.0, 1.0),
    "max_tpr_at_0_1pct_fpr": ("TPR at 0.1% FPR, every variant and attack", 0.0, 1.0),
    "max_epsilon_lower_bound": ("empirical epsilon lower bound, every variant and attack", 0.0, math.inf),
    "max_subgroup_auc_gap": ("AUC gap between two subgroups of one attribute, every variant and attack", 0.0, 1.0),
}
_UNMEASURABLE_CHOICES = ("fail", "pass")

VERDICT_EXIT_CODES = {"pass": 0, "fail": 1}


@dataclass(frozen=True)
class Policy:
    """Rules read from a policy file, with the file's path and sha256."""

    path: str
    sha256: str
    rules: dict[str, float]
    unmeasurable: str = "fail"

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "rules": dict(self.rules),
                "unmeasurable": self.unmeasurable}


def load_policy(path: Path | str) -> Policy:
    """Read and validate a policy file; raise InputError naming the key and value at fault."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        raise InputError(f"--policy {path}: file not found") from None
    except OSError as exc:
        raise InputError(f"--policy {path}: cannot read the file ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML ({exc}); fix the syntax, see examples/policy.toml") from exc

    unknown = sorted(set(document) - {"rules", "unmeasurable"})
    if unknown:
        raise InputError(
            f"{path}: unknown key '{unknown[0]}'; a policy has a [rules] table and an optional "
            f"'unmeasurable' key"
        )
    if "rules" not in document:
        raise InputError(f"{path}: missing table [rules]; add it with at least one of: {', '.join(RULES)}")
    table = document["rules"]
    if not isinstance(table, dict):
        raise InputError(f"{path}: 'rules' must be a table ([rules]), got {type(table).__name__}")
    if not table:
        raise InputError(f"{path}: [rules] is empty; add at least one of: {', '.join(RULES)}")

    rules = {}
    for key, value in table.items():
        if key not in RULES:
            hint = "; 'unmeasurable' goes above [rules], at the top of the file" if key == "unmeasurable" else ""
            raise InputError(f"{path}: unknown rule 'rules.{key}'; valid rules: {', '.join(RULES)}{hint}")
        _, low, high = RULES[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{path}: 'rules.{key}' must be a number, got {value!r}")
        if not (low <= value <= high) or math.isnan(value):
            upper = "" if math.isinf(high) else f" and at most {high:g}"
            raise InputError(f"{path}: 'rules.{key}' is {value!r}; it must be at least {low:g}{upper}")
        rules[key] = float(value)

    unmeasurable = document.get("unmeasurable", "fail")
    if unmeasurable not in _UNMEASURABLE_CHOICES:
        raise InputError(
            f"{path}: 'unmeasurable' is {unmeasurable!r}; valid values: {', '.join(_UNMEASURABLE_CHOICES)}"
        )
    return Policy(path=str(path), sha256=sha256_file(path), rules=rules, unmeasurable=unmeasurable)


def _where(variant: dict, attack: dict | None = None, **extra) -> dict:
    place = {"variant": variant["name"], "backend": variant["backend"], "format": variant.get("format")}
    if attack is not None:
        place["attack"] = attack["name"]
    return {**place, **extra}


def _candidates(rule: str, report: dict) -> list[tuple[float | None, dict]]:
    """Return (value, where) for every place the rule applies to; None where the value is not measurable."""
    found = []
    for variant in report["variants"]:
        if rule == "min_accuracy":
            found.append((variant["accuracy"]["nonmembers"], _where(variant)))
            continue
        for attack in variant["attacks"]:
            if rule == "max_auc_increase":
                versus = attack.get("versus_float")
                if versus is not None:
                    found.append((versus["auc_difference"], _where(variant, attack,
                                                                    p_value=versus["auc_difference_p_value"])))
            elif rule == "max_tpr_at_0_1pct_fpr":
                found.append((attack["tpr_at_fpr"].get(LOW_FPR_LEVEL), _where(variant, attack)))
            elif rule == "max_epsilon_lower_bound":
                found.append((attack.get("epsilon_lower_bound"), _where(variant, attack)))
            elif rule == "max_subgroup_auc_gap":
                for gap in attack.get("disparate_vulnerability", []):
                    if gap["attribute"] in _NON_SUBGROUP_ATTRIBUTES:
                        continue
                    found.append((gap["gap"], _where(
                        variant, attack, attribute=gap["attribute"], most_vulnerable=gap["most_vulnerable"],
                        least_vulnerable=gap["least_vulnerable"])))
    return found


def _evaluate_rule(rule: str, limit: float, report: dict, unmeasurable: str) -> dict:
    description = RULES[rule][0]
    values = [(value, where) for value, where in _candidates(rule, report)
              if value is not None and not math.isnan(value)]
    outcome = {"rule": rule, "limit": limit, "description": description}
    if not values:
        passed = unmeasurable == "pass"
        return {**outcome, "observed": None, "where": None, "status": "not measurable", "passed": passed,
                "message": f"{rule}: no measurable value in this report; counted as "
                           f"{'passed' if passed else 'failed'} (unmeasurable = \"{unmeasurable}\")"}

    if rule.startswith("min_"):
        observed, where = min(values, key=lambda item: item[0])
        passed = observed >= limit
        relation = ">=" if passed else "<"
    else:
        observed, where = max(values, key=lambda item: item[0])
        passed = observed <= limit
        relation = "<=" if passed else ">"
    place = f"{where['variant']} on {where['backend']}" + (f" ({where['format']})" if where.get("format") else "")
    if "attack" in where:
        place += f", attack {where['attack']}"
    if "attribute" in where:
        place += f", attribute {where['attribute']}"
    return {**outcome, "observed": observed, "where": where, "status": "pass" if passed else "fail",
            "passed": passed, "message": f"{rule}: {observed:.4g} {relation} {limit:g} at {place}"}


def evaluate_policy(policy: Policy, report: dict) -> dict:
    """Apply every rule of `policy` to a report dict; return the report's `policy` section.

    The section has `path`, `sha256`, `rules` (the limits), `unmeasurable`,
    `outcomes` (one per rule, in the policy file's order) and `verdict`:
    "pass" when every rule passed, otherwise "fail".
    """
    outcomes = [_evaluate_rule(rule, limit, report, policy.unmeasurable) for rule, limit in policy.rules.items()]
    verdict = "pass" if all(outcome["passed"] for outcome in outcomes) else "fail"
    return {**policy.to_dict(), "outcomes": outcomes, "verdict": verdict}


def exit_code(report: dict) -> int:
    """Return 0 without a policy or when it passed, 1 when a rule failed."""
    section = report.get("policy")
    return 0 if section is None else VERDICT_EXIT_CODES[section["verdict"]]
