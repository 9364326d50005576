"""Training settings: typed, validated before any data is read, one-line errors, old names still
accepted; and the one training loop's budget (max_steps, max_time) and early stopping."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import pytest

from applied_aitk.settings_file import read_settings
from applied_aitk.errors import AitkError
from applied_aitk.settings import build_settings, setting, settings_table


@dataclass
class Config:
    feature_stages: list[int] = setting([2, 3], "Backbone stages.", ge=1, le=4)
    quantiles: list[float] = setting([0.1, 0.5, 0.9], "Quantiles.", gt=0, lt=1)
    cell: Literal["lstm", "gru"] = setting("lstm", "Recurrent cell.")
    epochs: int = setting(0, "Passes over the data; 0: auto.", ge=0)
    learning_rate: float = setting(1e-3, "Peak learning rate.", gt=0)
    fill_gaps: bool = setting(False, "Interpolate gaps.")
    target_recall: float | None = setting(None, "Recall the threshold aims for.")
    max_time: float = setting(0.0, "Seconds of training at most.", ge=0)

    deprecated_names: ClassVar[dict] = {"lr": "learning_rate", "layers": "feature_stages", "max_minutes": ("max_time", lambda m: float(m) * 60)}


def error(values: dict) -> str:
    with pytest.raises(AitkError) as raised:
        build_settings(Config, values)
    return str(raised.value)


def test_text_from_set_becomes_the_fields_types():
    config = build_settings(Config, {"feature_stages": "2,3,4", "quantiles": "[0.05, 0.95]", "cell": "gru", "epochs": "7",
                                     "learning_rate": "3e-4", "fill_gaps": "true", "target_recall": "0.9"})
    assert config == Config([2, 3, 4], [0.05, 0.95], "gru", 7, 3e-4, True, 0.9)
    assert build_settings(Config, {"target_recall": "none"}).target_recall is None
    assert build_settings(Config, {}) == Config()


@pytest.mark.parametrize("suffix, text", [
    (".json", '{"feature_stages": [2, 3, 4], "quantiles": "0.05,0.95"}'),
    (".yaml", "feature_stages: [2, 3, 4]\nquantiles: 0.05,0.95\n"),
    (".toml", 'feature_stages = [2, 3, 4]\nquantiles = "0.05,0.95"\n'),
])
def test_lists_from_config_files_as_lists_or_comma_text(tmp_path, suffix, text):
    path = tmp_path / f"settings{suffix}"
    path.write_text(text)
    config = build_settings(Config, read_settings(path))
    assert config.feature_stages == [2, 3, 4] and config.quantiles == [0.05, 0.95]


def test_yaml_yes_no_on_off_stay_text_and_still_set_a_true_false_setting(tmp_path):
    @dataclass
    class Labelled:
        label: str = setting("label", "The label column.")
        fill_gaps: bool = setting(False, "Interpolate gaps.")

    path = tmp_path / "settings.yaml"
    path.write_text("label: no\nfill_gaps: yes\n")
    assert read_settings(path) == {"label": "no", "fill_gaps": "yes"}
    assert build_settings(Labelled, read_settings(path)) == Labelled("no", True)


def test_yaml_numbers_follow_yaml_1_2_and_are_plain_numbers(tmp_path):
    import orjson

    path = tmp_path / "settings.yaml"
    path.write_text("a: 0123\nb: 1:30\nc: 1e-3\nd: 2024-03-14\ne: 1_000\nf: 0o17\ng: [1, 2.50]\nh: 2024-03-14T10:00:00Z\n")
    settings = read_settings(path)  # YAML 1.1 (PyYAML): 83, 90, '1e-3', a date, 1000, a datetime
    assert settings == {"a": 123, "b": "1:30", "c": 0.001, "d": "2024-03-14", "e": 1000, "f": 15, "g": [1, 2.5], "h": "2024-03-14T10:00:00Z"}
    assert {type(v) for v in (settings["a"], settings["c"], *settings["g"])} == {int, float}
    assert orjson.loads(orjson.dumps(settings)) == settings  # plain numbers: any JSON writer takes them


def test_unknown_setting_suggests_the_closest_name():
    assert error({"learning_rat": 1}) == "unknown setting 'learning_rat'; did you mean 'learning_rate'?"
    assert error({"lrr": 1}) == "unknown setting 'lrr'; did you mean 'learning_rate'?"  # via its old name
    assert error({"zzz": 1}).startswith("unknown setting 'zzz'; known settings: feature_stages, quantiles, cell")


def test_bad_values_are_one_line_naming_setting_value_and_expectation():
    assert error({"epochs": "many"}) == "setting epochs='many': expected an integer"
    assert error({"epochs": 2.5}) == "setting epochs=2.5: expected an integer"
    assert error({"learning_rate": "fast"}) == "setting learning_rate='fast': expected a number"
    assert error({"fill_gaps": "maybe"}) == "setting fill_gaps='maybe': expected true or false"
    assert error({"cell": "transformer"}) == "setting cell='transformer': expected one of lstm, gru"
    assert error({"feature_stages": "2,x"}) == "setting feature_stages=[\"2\", \"x\"]: expected an integer (item 2)"


def test_bounds_are_checked_for_values_and_each_list_item():
    assert error({"epochs": -1}) == "setting epochs=-1: expected a value >= 0"
    assert error({"learning_rate": "0"}) == "setting learning_rate='0': expected a value > 0"
    assert error({"feature_stages": "2,5"}) == "setting feature_stages=[\"2\", \"5\"]: expected values <= 4"
    assert error({"quantiles": [0.5, 1.0]}) == "setting quantiles=[0.5, 1.0]: expected values < 1"


def test_nan_and_infinity_are_refused_whatever_the_bounds():
    assert error({"learning_rate": "nan"}) == "setting learning_rate='nan': expected a finite number"
    assert error({"learning_rate": "inf"}) == "setting learning_rate='inf': expected a finite number"  # passed gt=0
    assert error({"target_recall": float("nan")}) == "setting target_recall=NaN: expected a finite number"  # no bounds
    assert error({"quantiles": "0.1,inf,0.5"}) == 'setting quantiles=["0.1", "inf", "0.5"]: expected finite numbers'
    assert error({"max_time": "1e999"}) == "setting max_time='1e999': expected a finite number"


def test_deprecated_names_work_with_a_warning(caplog):
    config = build_settings(Config, {"lr": "0.01", "layers": [3]})
    assert config.learning_rate == 0.01 and config.feature_stages == [3]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and "'lr' is deprecated, use 'learning_rate'" in warnings[0]
    assert error({"lr": 0.1, "learning_rate": 0.2}).startswith("settings 'lr' and 'learning_rate' both given")
    assert build_settings(Config, {"max_minutes": "1.5"}).max_time == 90.0  # a renamed setting with a new unit
    assert error({"max_minutes": "soon"}) == "setting max_minutes='soon': expected a number"


def test_help_table_has_type_default_and_meaning():
    table = settings_table(Config, width=100)
    rows = {line.split()[0]: line for line in table.splitlines()[2:]}
    assert rows["epochs"].split()[:5] == ["epochs", "integer", ">=", "0", "0"] and rows["epochs"].endswith("0: auto.")
    assert "list of integers >= 1 <= 4" in rows["feature_stages"] and "lstm|gru" in rows["cell"]
    assert "number or none" in rows["target_recall"] and "(formerly lr)" in rows["learning_rate"]


class Counter:
    """Stands in for a module: fit only calls train(), state_dict() and load_state_dict()."""

    def __init__(self):
        self.weights = {"w": 0}

    def train(self):
        pass

    def state_dict(self):
        return dict(self.weights)

    def load_state_dict(self, state):
        self.weights = dict(state)


def run_fit(scores=None, **budget):
    """fit over 10 batches an epoch; each step adds 1 to the weight; validation returns ``scores`` in turn."""
    from applied_aitk.train import fit

    module, scores = Counter(), list(scores or [])

    def step(batch):
        module.weights["w"] += 1
        time.sleep(0.02 if budget.get("max_time") else 0)
        return 1.0

    validate = (lambda: {"val_loss": scores.pop(0)}) if scores else None
    return module, fit(module, lambda epoch: range(10), step, validate, **budget)


def test_fit_stops_at_max_steps_mid_epoch():
    module, result = run_fit(epochs=100, max_steps=25)
    assert result.steps == 25 and result.stopped == "max_steps" and module.weights["w"] == 25
    assert [h["steps"] for h in result.history] == [10, 20, 25]


def test_fit_stops_at_max_time():
    started = time.perf_counter()
    _, result = run_fit(epochs=1000, max_time=0.3)
    assert result.stopped == "max_time" and time.perf_counter() - started < 2 and result.steps < 1000 * 10


def test_fit_stops_early_and_restores_the_best_epoch():
    module, result = run_fit(scores=[3.0, 2.0, 1.0, 1.5, 1.2, 1.1, 0.9], epochs=7, patience=3)
    assert result.stopped == "patience" and result.best_epoch == 3 and result.best == 1.0
    assert len(result.history) == 6 and module.weights["w"] == 30  # the weights after epoch 3
