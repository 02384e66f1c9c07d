"""Every setting fuzzed. For every field of every config section (read from the config's own
declarations, so a new field is covered without a new test): values of the wrong type, out of range,
empty, NaN/inf, huge, negative, unicode and whitespace-padded, through `--set` on commands that stop
before training (`harness config`, `harness run --dry-run`); then grid's and sweep's own options
(`--dry-run`). Each is accepted (exit 0), or refused with exit 2 and exactly one `Error:` line that
names what was wrong; never a traceback. Examples are derandomized: CI tries the same inputs each run.
"""
from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import invoke
from harness import config

FIELDS = [f"{name}.{f.name}" for name, cls in config.sections().items() for f in dataclasses.fields(cls)]
NASTY = ["", " ", "abc", "1.5", "-1", "0", "1", "nan", "inf", "-inf", "1e308", "99999999999999999999", "-0",
         "1e-320", "ünïcødé 名前", " 3 ", "true", "a,b", ",", "=", "None", "0x10", "3" * 400]
FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def around(key: str) -> list[str]:
    """Values at and beside a field's declared bounds and choices."""
    section, _, name = key.partition(".")
    meta = next(f.metadata for f in dataclasses.fields(config.sections()[section]) if f.name == name)
    out = []
    for bound in (meta.get(b) for b in ("gt", "ge", "lt", "le")):
        if bound is not None:
            out += [repr(bound), repr(bound - 1), repr(bound + 1), repr(bound - 1e-9), repr(bound + 1e-9)]
    for choice in meta.get("choices", ()):
        out += [str(choice), f" {choice} ", str(choice).upper(), f"{choice}x"]
    return out


def one_line_or_accepted(result, *names: str) -> None:
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith(("note:", "Deprecated:"))]
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 0:
        return
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert any(n in lines[0] for n in names), (names, lines[0])


def test_every_value_of_every_field_through_config(runner):
    """Each field x its bounds, choices and every nasty value: ~3,000 inputs, in-process."""
    tried = 0
    for key in FIELDS:
        for value in dict.fromkeys(NASTY + around(key)):
            result = invoke(runner, ["config", "--preset", "tiny", "--set", f"{key}={value}"], ok=False)
            one_line_or_accepted(result, key, "--set")
            tried += 1
    assert tried >= 20 * len(FIELDS) and len(FIELDS) >= 90


def _no_split(value: str) -> bool:
    # A --set value holding " other.key=" is two items by design (MLproject passes them that way).
    return not re.search(r"\s[A-Za-z_]\w*(\.\w+)?=", value)


@settings(FUZZ, max_examples=400)
@given(key=st.sampled_from(FIELDS),
       value=st.one_of(st.text(max_size=16), st.integers().map(str),
                       st.floats(allow_nan=True, allow_infinity=True).map(repr),
                       st.lists(st.text(alphabet="abc ,=;", max_size=4), max_size=4).map(",".join)))
def test_generated_values_through_config(runner, key, value):
    assume(_no_split(value) and "\x00" not in value)
    result = invoke(runner, ["config", "--preset", "tiny", "--set", f"{key}={value}"], ok=False)
    one_line_or_accepted(result, key, "--set")


@settings(FUZZ, max_examples=80)
@given(key=st.sampled_from(FIELDS), value=st.sampled_from(NASTY[:18]))
def test_generated_values_through_a_dry_run(runner, tree, tracking_uri, key, value):
    """The same values through `run --dry-run`: config, data and generator checked, nothing opened."""
    result = invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, "--set",
                             "data.classes=airplane,automobile,bird", "--set", f"{key}={value}", "--dry-run"], ok=False)
    one_line_or_accepted(result, key, key.split(".")[0], "--set", "generator.kind")


@settings(FUZZ, max_examples=120)
@given(seeds=st.sampled_from(["1", "2", "5", "0", "-3", "x", "1e3", " 2 "]),
       halfwidth=st.sampled_from([None, "1", "0", "-1", "nan", "inf", "1e-9", "x", "1e308"]),
       max_seeds=st.sampled_from([None, "1", "2", "4", "20", "nan", "-5", "x"]),
       axis=st.sampled_from(["data.n_per_class=10,20", "data.n_per_class=", "=1,2", "nokey=1", "data.n_per_class=10,10",
                             "classifier.lr=nan,1", "generator.kind=gan,oracle", "data.seed=1,2", "data.n_per_class= ,"]),
       generators=st.sampled_from([None, "0", "1", "3", "9", "-1"]),
       margin=st.sampled_from([None, "1", "0.5", "0", "-1", "nan", "inf", "100", "1e9", "x"]),
       ladder=st.sampled_from([None, "0,8", "8", "100000", "0,100000", "0", "-1", "8,8", "x", ""]))
def test_grid_options(runner, tree, tracking_uri, tmp_path, seeds, halfwidth, max_seeds, axis, generators, margin,
                      ladder):
    args = ["grid", "--preset", "tiny", "--data-dir", tree, "--set", "data.classes=airplane,automobile,bird",
            "--storage", f"sqlite:///{tmp_path / 'o.db'}", "--axis", axis, "--seeds", seeds, "--dry-run"]
    args += ["--ci-halfwidth", halfwidth] if halfwidth is not None else []
    args += ["--max-seeds", max_seeds] if max_seeds is not None else []
    args += ["--set", f"seeds.generators={generators}"] if generators is not None else []
    args += ["--margin", margin] if margin is not None else []
    args += ["--oracle-ladder", ladder] if ladder is not None else []
    result = invoke(runner, args, ok=False)
    one_line_or_accepted(result, "--seeds", "--ci-halfwidth", "--max-seeds", "--axis", "seeds.generators",
                         axis.partition("=")[0] or "--axis", "--margin", "--oracle-ladder")
    # A rung's count is the ladder's, never blamed on the user's generate.n_samples.
    assert "generate.n_samples (100000)" not in result.output, result.output
    assert not (tmp_path / "o.db").exists()  # a dry run makes no study


@settings(FUZZ, max_examples=40)
@given(trials=st.sampled_from(["1", "0", "-1", "x", "1e9", " 5 "]),
       sampler_seed=st.sampled_from(["0", "-1", "x", "99999999999999999999"]),
       study=st.sampled_from(["s", "", " ", "名前", "a\nb"]))
def test_sweep_options(runner, tree, tracking_uri, trials, sampler_seed, study):
    result = invoke(runner, ["sweep", "--preset", "tiny", "--data-dir", tree, "--set",
                             "data.classes=airplane,automobile,bird", "--trials", trials, "--sampler-seed", sampler_seed,
                             "--study", study, "--dry-run"], ok=False)
    one_line_or_accepted(result, "--trials", "--sampler-seed", "--study")


@pytest.mark.parametrize("command", ["run", "grid", "sweep"])
def test_a_dry_run_opens_nothing(runner, tree, tracking_uri, client, command):
    invoke(runner, [command, "--preset", "tiny", "--data-dir", tree, "--set", "data.classes=airplane,automobile,bird",
                    "--dry-run"])
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
