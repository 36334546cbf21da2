"""Unit tests for config validation: ``core.config.load_config`` and the files it reads.

Each broken config is the shipped one, loaded with ``yaml.safe_load``, changed
in one place and written with its hierarchy and personas files into
``tmp_path``. Every error test checks that one problem line names the file,
the dotted key, the bad value (where there is one) and what is allowed.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import re
from pathlib import Path

import pytest
import yaml

from conftest import write_config
from core.framework import paths
from core.config import config_hash, load_config
from core.framework.stage import stage_config
from core.pipeline import stage_by_name
from core.framework.schema import ConfigError

SHIPPED_DIR = paths.DEFAULT_CONFIG.parent
FILES = ("config", "hierarchy", "personas", "strategies")


@functools.cache
def shipped_documents() -> dict[str, dict]:
    """The shipped config, hierarchy and personas files as parsed YAML, by file stem.

    Parsed once per session; tests change a deep copy (the ``docs`` fixture).
    """
    return {name: yaml.safe_load((SHIPPED_DIR / f"{name}.yml").read_text(encoding="utf-8"))
            for name in FILES}


def write_documents(folder: Path, documents: dict[str, dict]) -> Path:
    """Write every document of ``docs`` (config and the files it names) into ``folder``; return config.yml's path."""
    others = {stem: doc for stem, doc in documents.items() if stem != "config"}
    return write_config(folder, documents["config"], **others)


def problem(file: Path, key: str, *parts: str) -> str:
    """Regex for one problem line: ``<file>: key '<key>': ...`` then ``parts`` in order."""
    return re.escape(f"{file}: key '{key}': ") + ".*" + ".*".join(map(re.escape, parts))


@pytest.fixture
def docs() -> dict[str, dict]:
    """A private, modifiable copy of the shipped YAML documents."""
    return copy.deepcopy(shipped_documents())


def persona(docs: dict, name: str = "teenage_girl") -> dict:
    return docs["personas"]["personas"][name]


def rename_department(prefs: dict, old: str, new: str) -> dict:
    """``prefs`` with key ``old`` renamed to ``new``, keeping its share (so the sum stays 1)."""
    return {(new if k == old else k): v for k, v in prefs.items()}


# --- the shipped files ---------------------------------------------------------------------------

def test_shipped_config_loads_with_expected_hierarchy_and_personas():
    """The shipped config loads: 10 personas, 21 departments (14 merchandise), 394 classes."""
    config = load_config(paths.DEFAULT_CONFIG)

    assert len(config.personas) == 10
    assert len(config.hierarchy.departments) == 21
    assert config.hierarchy.n_classes() == 394
    assert len(config.hierarchy.merchandise_departments) == 14
    assert set(config.generate_data.catalog.department_price_ranges) == set(config.hierarchy.merchandise_departments)
    assert len(config.scenarios) == 7
    assert sum(p.weight for p in config.personas.values()) == pytest.approx(1.0)


def test_shipped_config_round_trips_through_tmp_path(tmp_path, docs):
    """The helper's unmodified copy loads too, so every failure below is caused by its one change."""
    config = load_config(write_documents(tmp_path, docs))

    assert config.hierarchy_file == tmp_path / "hierarchy.yml"
    assert len(config.personas) == 10


# --- one bad value, one problem line --------------------------------------------------------------

MISSING = object()  # as a bad value: the key is deleted


def plus(amount: float):
    return lambda value: value + amount


def appended(item):
    return lambda values: [*values, item]


def renamed(old: str, new: str):
    """Department ``old`` renamed ``new``, keeping its share (so the shares still sum to 1)."""
    return lambda prefs: rename_department(prefs, old, new)


def case(name: str, file: str, key: str, bad, *parts: str, reported: str | None = None, unwanted: str | None = None):
    """One row of the table below: in ``file``.yml set ``key`` (dotted) to ``bad`` (a value, ``MISSING``, or a
    function of the shipped value); expect one problem line under ``reported`` (default ``key``) with ``parts``
    in order, and without ``unwanted``."""
    return pytest.param(file, key, bad, parts, reported or key, unwanted, id=name)


GIRL = "personas.teenage_girl"
BAD_VALUES = [
    # personas.yml
    case("persona weights sum to 1.05", "personas", f"{GIRL}.weight", plus(0.05),
         "sum to 1.05", "must sum to 1", reported="personas.*.weight"),
    case("department shares sum to 1.05", "personas", f"{GIRL}.department_preferences.Accessories", plus(0.05),
         "sum to 1.05", "must sum to 1", reported=f"{GIRL}.department_preferences"),
    case("misspelt department gets a hint", "personas", f"{GIRL}.department_preferences",
         renamed("Ladies Hosiery", "Ladies Clothes"), "'Ladies Clothes' is not in the hierarchy",
         "did you mean 'Ladies Clothing'", "allowed: Accessories, Health & Beauty, Home",
         reported=f"{GIRL}.department_preferences.Ladies Clothes"),
    case("unlike department gets no misleading hint", "personas", f"{GIRL}.department_preferences",
         renamed("Ladies Hosiery", "Garden Centre"), "'Garden Centre' is not in the hierarchy",
         "allowed: Accessories, Health & Beauty, Home",
         reported=f"{GIRL}.department_preferences.Garden Centre", unwanted="did you mean"),
    case("non-merchandise department preferred", "personas", f"{GIRL}.department_preferences",
         renamed("Ladies Hosiery", "Gift Cards"), "'Gift Cards'", "'gift_card'", "not merchandise",
         reported=f"{GIRL}.department_preferences.Gift Cards"),
    case("misspelt class gets a hint", "personas", f"{GIRL}.class_preferences.Ladies Clothing", appended("Jumperz"),
         "class 'Jumperz' is not a sellable class of 'Ladies Clothing'", "did you mean 'Jumpers'"),
    case("class of another department", "personas", f"{GIRL}.class_preferences.Ladies Clothing",
         appended("Luggage"), "class 'Luggage' is not a sellable class of 'Ladies Clothing'"),
    case("negative range", "personas", f"{GIRL}.spending_profile.avg_order_value", [-5, 10],
         "[-5, 10]", "negative range", ">= 0"),
    case("inverted range", "personas", f"{GIRL}.spending_profile.avg_order_value", [50, 10],
         "[50, 10]", "minimum 50 is above maximum 10", "[min, max]"),
    case("unknown persona key", "personas", f"{GIRL}.favourite_colour", "pink",
         "unknown key", "allowed keys: weight, description, demographics"),
    # config.yml
    case("inverted range in config.yml", "config", "cluster.gmm.n_components", [12, 4],
         "[12, 4]", "minimum 12 is above maximum 4", "[min, max]"),
    case("misspelt top-level key", "config", "sead", 1,
         "unknown key", "did you mean 'seed'", "allowed keys: seed, hierarchy_file"),
    case("misspelt nested key", "config", "cluster.kmeans.n_cluster", [4, 12],
         "unknown key", "did you mean 'n_clusters'", "allowed keys: n_clusters, n_init"),
    case("missing key", "config", "data.n_customers", MISSING, "missing", "expected an integer"),
    case("wrong type", "config", "data.n_customers", "many", "'many' is not valid", "expected an integer"),
    case("below the minimum", "config", "data.n_customers", 0, "0 is below the minimum 1"),
    case("not a choice", "config", "cluster.gmm.covariance_type", "fullest",
         "'fullest' is not allowed", "allowed values: full, tied, diag, spherical"),
    case("scaler not a choice", "config", "prepare_features.scaler", "minmax", "allowed values: standard, robust"),
    case("input dropout of 1", "config", "train_autoencoder.input_dropout", 1.0, "1.0 is above the maximum 0.9"),
    case("an explained share above 1", "config", "cluster.primary.min_latent_explained", 1.5,
         "1.5 is above the maximum 1.0"),
    case("negative class mix", "config", "prepare_features.class_mix_components", -1, "-1 is below the minimum 0"),
    case("square root of a feature that is also logged", "config", "prepare_features.sqrt_features",
         ["dept_share__*", "orders_per_month"], "'orders_per_month' names a feature log1p_features also transforms",
         "remove it from one of the two lists"),
    case("square root of no feature", "config", "prepare_features.sqrt_features", ["dept_shares"],
         "'dept_shares' matches no behavioural feature"),
    case("history ends before it starts", "config", "data.history_end", dt.date(2022, 12, 31),
         "2022-12-31 is not after history_start 2023-01-01"),
    case("primary auto with a space that is no choice", "config", "cluster.primary",
         {"method": "auto", "space": "umap", "min_segments_share": 0.5, "min_latent_explained": 0.1},
         "'umap' is not allowed", "allowed values: raw, latent, counts, auto",
         reported="cluster.primary.space"),
    case("misspelt ground truth gets a hint", "config", "cluster.evaluation.ground_truth", "persnoa",
         "'persnoa' is not a column of customers.parquet that can be a ground truth", "did you mean 'persona'",
         "or null for none"),
    case("identifier as ground truth", "config", "cluster.evaluation.ground_truth", "email",
         "'email' is not a column of customers.parquet that can be a ground truth", "allowed: persona",
         "or null for none"),
    case("fcm selection not a choice", "config", "cluster.fcm.selection", "bic",
         "'bic' is not allowed", "allowed values: silhouette, partition_coefficient"),
    case("hdbscan selection not a choice", "config", "cluster.hdbscan.cluster_selection_method", "leaves",
         "'leaves' is not allowed", "allowed values: eom, leaf"),
    case("return rate of a misspelt department", "config", "generate_data.department_return_rates.Ladies Clothes",
         0.1, "'Ladies Clothes' is not a merchandise department", "did you mean 'Ladies Clothing'"),
    case("merchandise department without a price range", "config",
         "generate_data.catalog.department_price_ranges.Home", MISSING, "missing merchandise department 'Home'",
         reported="generate_data.catalog.department_price_ranges"),
    case("analysis date before the history", "config", "prepare_features.analysis_date", "2020-01-01",
         "2020-01-01 is before data.history_start"),
    case("holiday window of one day", "config", "prepare_features.holiday_window", ["11-01"],
         "must be two days [MM-DD, MM-DD]"),
    case("back-to-school window ends on 31 September", "config", "prepare_features.back_to_school_window",
         ["07-15", "09-31"], "'09-31' is not a day of the year"),
    case("kids size pattern not a regex", "config", "prepare_features.kids_size_pattern", "^(baby",
         "is not a regular expression"),
    case("attribute listed twice", "config", "prepare_features.attribute_shares", ["style", "style"],
         "lists a value twice"),
    case("eligibility needs an order", "config", "prepare_features.eligibility.min_orders", 0,
         "0 is below the minimum 1"),
    case("negative recency limit", "config", "prepare_features.eligibility.max_recency_days", -5,
         "-5 is below the minimum 0"),
    case("churn thresholds out of order", "config", "customer_value.churn_risk_thresholds", [0.7, 0.3],
         "[0.7, 0.3] must be two numbers [high_below, medium_below]", "0 < high_below < medium_below < 1"),
    case("churn threshold of 1", "config", "customer_value.churn_risk_thresholds", [0.3, 1.0],
         "0 < high_below < medium_below < 1"),
    case("three churn thresholds", "config", "customer_value.churn_risk_thresholds", [0.2, 0.5, 0.8],
         "must be two numbers"),
    case("horizon of 0 days", "config", "customer_value.horizon_days", 0, "0 is below the minimum 1"),
    case("misspelt horizon gets a hint", "config", "customer_value.horizon", 365,
         "unknown key", "did you mean 'horizon_days'"),
    case("customer value switch not a boolean", "config", "customer_value.enabled", "yes",
         "'yes' is not valid", "expected true or false"),
    # Profile, ground-truth, identity and id columns never enter the model matrix, whatever the pattern.
    *[case(f"model feature {pattern!r}", "config", "prepare_features.model_features", appended(pattern),
           f"'{pattern}' names", named, "never enter the model matrix")
      for pattern, named in [("persona", "persona"), ("age", "age"), ("dropout_*", "dropout_date"),
                             ("first_order_date", "first_order_date"), ("email", "email"), ("*", "age")]],
]


@pytest.mark.parametrize("file, key, bad, parts, reported, unwanted", BAD_VALUES)
def test_one_bad_value_is_one_problem_naming_file_key_value_and_what_is_allowed(tmp_path, docs, file, key, bad,
                                                                                   parts, reported, unwanted):
    *parents, last = key.split(".")
    section = docs[file]
    for part in parents:
        section = section[part]
    if bad is MISSING:
        del section[last]
    else:
        section[last] = bad(section[last]) if callable(bad) else bad
    path = write_documents(tmp_path, docs)

    with pytest.raises(ConfigError, match=problem(tmp_path / f"{file}.yml", reported, *parts)) as caught:
        load_config(path)
    assert len(caught.value.problems) == 1, caught.value.problems
    if unwanted:
        assert unwanted not in str(caught.value)


def test_a_null_ground_truth_means_none(tmp_path, docs):
    docs["config"]["cluster"]["evaluation"]["ground_truth"] = None
    assert load_config(write_documents(tmp_path, docs)).cluster.evaluation.ground_truth is None


# --- personas.yml --------------------------------------------------------------------------------

def test_several_persona_problems_are_reported_together(tmp_path, docs):
    """Problems in different personas of one file come back in one ConfigError."""
    girl = persona(docs, "teenage_girl")
    girl["department_preferences"] = rename_department(girl["department_preferences"],
                                                       "Ladies Hosiery", "Gift Cards")
    persona(docs, "teenage_boy")["class_preferences"]["Primarket"].append("Luggage")
    path = write_documents(tmp_path, docs)

    with pytest.raises(ConfigError, match=r"\(2 problem\(s\)\)") as excinfo:
        load_config(path)
    keys = [re.search(r"key '([^']*)'", p).group(1) for p in excinfo.value.problems]
    assert keys == ["personas.teenage_girl.department_preferences.Gift Cards",
                    "personas.teenage_boy.class_preferences.Primarket"]


# --- config.yml ----------------------------------------------------------------------------------

def test_primary_method_must_be_fitted(tmp_path, docs):
    """cluster.primary must name a method listed in cluster.methods."""
    docs["config"]["cluster"]["methods"] = ["gmm", "kmeans"]
    docs["config"]["cluster"]["primary"].update(method="hdbscan", space="latent")
    path = write_documents(tmp_path, docs)

    with pytest.raises(ConfigError, match=problem(
            tmp_path / "config.yml", "cluster.primary", "hdbscan/latent is not fitted",
            "one of cluster.methods")):
        load_config(path)


def test_primary_auto_is_accepted_for_either_half(tmp_path, docs):
    docs["config"]["cluster"]["primary"].update(method="auto", space="latent")
    assert load_config(write_documents(tmp_path, docs)).cluster.primary.method == "auto"


def test_the_count_mixture_and_the_counts_space_come_together(tmp_path, docs):
    """countmix is fitted only in the counts space and the other methods never in it: a config that lists one
    without the other, or names a primary pair that is never fitted, is refused naming the key."""
    cluster = docs["config"]["cluster"]
    cluster["spaces"] = ["raw", "latent"]
    with pytest.raises(ConfigError, match=problem(tmp_path / "a" / "config.yml", "cluster.spaces",
                                                  "has no counts space", "add counts, or remove countmix")):
        load_config(write_documents(tmp_path / "a", docs))
    cluster["spaces"], cluster["methods"] = ["raw", "counts"], ["kmeans"]
    with pytest.raises(ConfigError, match=problem(tmp_path / "b" / "config.yml", "cluster.spaces",
                                                  "counts is listed but no method")):
        load_config(write_documents(tmp_path / "b", docs))
    cluster["methods"] = ["kmeans", "countmix"]
    cluster["primary"].update(method="kmeans", space="counts")
    with pytest.raises(ConfigError, match=problem(tmp_path / "c" / "config.yml", "cluster.primary",
                                                  "kmeans/counts is never fitted")):
        load_config(write_documents(tmp_path / "c", docs))
    cluster["primary"].update(method="auto", space="auto")
    docs["config"]["profile_export"]["also_profile"] = ["countmix_raw"]
    with pytest.raises(ConfigError, match=problem(tmp_path / "d" / "config.yml", "profile_export.also_profile",
                                                  "'countmix_raw' is not fitted")):
        load_config(write_documents(tmp_path / "d", docs))
    docs["config"]["profile_export"]["also_profile"] = ["countmix_counts", "kmeans_raw"]
    assert load_config(write_documents(tmp_path / "e", docs)).cluster.methods == ("kmeans", "countmix")


def test_missing_hierarchy_file(tmp_path, docs):
    """A hierarchy_file that does not exist is reported under config.yml's key, with the path tried."""
    docs["config"]["hierarchy_file"] = "missing.yml"
    path = write_documents(tmp_path, docs)

    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "missing.yml")) + ".*not found") as excinfo:
        load_config(path)
    message = str(excinfo.value)
    assert f"{path}: key 'hierarchy_file'" in message


def test_malformed_yaml_names_file_and_line(tmp_path):
    """Unparseable YAML is a ConfigError naming the file and the line, not a yaml traceback."""
    lines = paths.DEFAULT_CONFIG.read_text(encoding="utf-8").splitlines()
    seed_line = lines.index("seed: 42")
    lines[seed_line] = "seed: [42"
    path = tmp_path / "config.yml"
    path.write_text("\n".join(lines), encoding="utf-8")

    with pytest.raises(ConfigError, match=re.escape(f"{path}: not valid YAML") + r"(.|\n)*"
                       + re.escape(f"line {seed_line + 1},")):
        load_config(path)


def test_several_problems_in_one_file_are_all_reported(tmp_path, docs):
    """Four independent mistakes in config.yml come back together in one ConfigError."""
    config = docs["config"]
    config["bogus"] = 1
    config["seed"] = "x"
    config["data"]["n_customers"] = 0
    config["cluster"]["gmm"]["covariance_type"] = "fullest"
    path = write_documents(tmp_path, docs)

    with pytest.raises(ConfigError, match=r"\(4 problem\(s\)\)") as excinfo:
        load_config(path)
    problems = excinfo.value.problems
    assert all(p.startswith(f"{path}: key '") for p in problems)
    keys = {re.search(r"key '([^']*)'", p).group(1) for p in problems}
    assert keys == {"bogus", "seed", "data.n_customers", "cluster.gmm.covariance_type"}


# --- stage hashes --------------------------------------------------------------------------------

def test_config_hash_tracks_the_sections_each_stage_reads(tmp_path, docs):
    """Changing cluster.kmeans.n_init makes 04_cluster (and 05, which reads cluster) stale, not 01-03."""
    before = load_config(write_documents(tmp_path / "before", docs))
    docs["config"]["cluster"]["kmeans"]["n_init"] += 1
    after = load_config(write_documents(tmp_path / "after", docs))

    changed = {stage for stage in paths.STAGE_NAMES
               if config_hash(stage_config(before, stage_by_name(stage))) != config_hash(stage_config(after, stage_by_name(stage)))}

    assert config_hash(stage_config(before, stage_by_name(paths.GENERATE_DATA))) == \
        config_hash(stage_config(after, stage_by_name(paths.GENERATE_DATA)))
    assert changed == {paths.CLUSTER, paths.PROFILE_EXPORT}
    assert stage_config(after, stage_by_name(paths.CLUSTER))["cluster"]["kmeans"]["n_init"] == \
        docs["config"]["cluster"]["kmeans"]["n_init"]


def test_config_hash_is_order_independent():
    """The hash is of the values, not of the key order they were written in."""
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_duplicate_key_is_an_error_naming_the_line(tmp_path, docs):
    """A key written twice would let the later value win silently; it is refused with both lines."""
    path = write_documents(tmp_path, docs)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("seed: 42", "seed: 7\nseed: 42", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"(?s)" + re.escape(str(path)) + r".*key 'seed' appears twice "
                                                                         r"\(first on line \d+\)"):
        load_config(path)


def test_impossible_date_is_reported_with_file_and_line(tmp_path, docs):
    path = write_documents(tmp_path, docs)
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r"history_start: .*", "history_start: 2023-02-30", text), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"(?s)" + re.escape(str(path)) + r".*'2023-02-30' is not a valid "
                                                                         r"date.*YYYY-MM-DD.*line \d+"):
        load_config(path)


def test_config_path_that_is_a_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path)) + ": cannot be read"):
        load_config(tmp_path)


# --- generator, personas and scenarios (stage 01) ------------------------------------------------

def scenario(docs: dict, name: str) -> dict:
    return docs["personas"]["scenarios"][name]


def assert_problems(error: ConfigError, *expected: str) -> None:
    """Each regex of ``expected`` matches exactly one problem line, and there are no others."""
    problems = error.problems
    assert len(problems) == len(expected), "\n".join(problems)
    for pattern in expected:
        assert sum(bool(re.match(pattern, p)) for p in problems) == 1, (pattern, problems)


def test_scenario_problems_name_their_keys(tmp_path, docs):
    """Unknown persona, impossible days, an unknown focus class, a non-merchandise boost, a sale without
    depth and a scenario that changes nothing: each reported under its scenario's key."""
    scenario(docs, "january_sales")["personas"].append("teenage_gril")
    scenario(docs, "back_to_school")["start"] = "13-01"
    scenario(docs, "back_to_school")["end"] = "02-30"
    scenario(docs, "back_to_school")["class_focus"]["Kids Clothing"]["classes"] = ["SCHOOL WEAR"]
    scenario(docs, "christmas_shop")["department_boost"]["Gift Cards"] = 2.0
    scenario(docs, "summer_sale")["discount_depth"] = [0, 0]
    docs["personas"]["scenarios"]["idle"] = {"description": "does nothing", "personas": ["teenage_boy"],
                                             "start": "05-01", "end": "05-31"}
    path = write_documents(tmp_path, docs)
    personas_file = tmp_path / "personas.yml"

    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert_problems(
        excinfo.value,
        problem(personas_file, "scenarios.january_sales.personas", "persona 'teenage_gril' is not defined",
                "did you mean 'teenage_girl'", "defined: teenage_girl, teenage_boy"),
        problem(personas_file, "scenarios.back_to_school.start", "'13-01' is not a day of the year", "MM-DD"),
        problem(personas_file, "scenarios.back_to_school.end", "'02-30' is not a day of the year", "MM-DD"),
        problem(personas_file, "scenarios.back_to_school.class_focus.Kids Clothing.classes",
                "class 'SCHOOL WEAR' is not a sellable class of 'Kids Clothing'", "did you mean 'SCHOOLWEAR'"),
        problem(personas_file, "scenarios.christmas_shop.department_boost.Gift Cards",
                "department 'Gift Cards' is not a merchandise department", "allowed: Accessories"),
        problem(personas_file, "scenarios.summer_sale.discount_depth", "[0, 0] while discount_share > 0"),
        problem(personas_file, "scenarios.idle", "changes nothing", "visit_multiplier"),
    )


def test_persona_generator_fields_name_their_keys(tmp_path, docs):
    """Brand tier shares not summing to 1, an unknown tier, a department both class and department
    level, and children too old for kids' sizes."""
    persona(docs, "teenage_girl")["brand_tier_affinity"] = {"value": 0.70, "mid": 0.30, "premium": 0.05}
    persona(docs, "teenage_boy")["brand_tier_affinity"] = {"value": 0.6, "mid": 0.3, "luxury": 0.1}
    persona(docs, "young_woman_fashion")["classes_per_department"] = {"Ladies Clothing": [1, 2]}
    persona(docs, "mature_shopper")["demographics"]["children"]["age_at_start"] = [10, 25]
    path = write_documents(tmp_path, docs)
    personas_file = tmp_path / "personas.yml"

    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert_problems(
        excinfo.value,
        problem(personas_file, "personas.teenage_girl.brand_tier_affinity", "sum to 1.05", "must sum to 1"),
        problem(personas_file, "personas.teenage_boy.brand_tier_affinity", "unknown tier(s) luxury",
                "allowed: value, mid, premium"),
        problem(personas_file, "personas.young_woman_fashion.classes_per_department.Ladies Clothing",
                "lists its classes in class_preferences", "not both"),
        problem(personas_file, "personas.mature_shopper.demographics.children.age_at_start",
                "older than 17"),
    )


def test_unknown_styles_are_named_with_the_persona_or_scenario(tmp_path, docs):
    persona(docs)["style_affinity"]["glam"] = 1.0
    scenario(docs, "teen_trend_season")["style_boost"] = {"grunge": 2.0}
    path = write_documents(tmp_path, docs)

    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    allowed = "allowed: casual, classic, formal, sport, trend"
    assert_problems(
        excinfo.value,
        r".*personas\.yml.*personas\.teenage_girl\.style_affinity.*unknown style\(s\) glam; " + allowed,
        r".*personas\.yml.*scenarios\.teen_trend_season\.style_boost.*unknown style\(s\) grunge; " + allowed,
    )


def test_size_rules_that_match_nothing_name_the_rule(tmp_path, docs):
    rules = docs["config"]["generate_data"]["catalog"]["size_rules"]
    rules.insert(0, {"department": "Ladies Footwaer", "classes": "*", "scale": "ladies_footwear"})
    rules.insert(1, {"department": "Home", "classes": "Sofas*", "scale": "none"})
    path = write_documents(tmp_path, docs)
    config_file = tmp_path / "config.yml"

    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert_problems(
        excinfo.value,
        problem(config_file, "generate_data.catalog.size_rules[0].department",
                "'Ladies Footwaer' matches no merchandise department"),
        problem(config_file, "generate_data.catalog.size_rules[1].classes", "'Sofas*' matches no class of Home"),
    )


def test_generate_data_mixes_and_days_name_their_keys(tmp_path, docs):
    gen = docs["config"]["generate_data"]
    gen["closed_days"] = ["12-25", "Boxing Day"]
    gen["brand_tier_affinity"] = {"value": 0.5, "mid": 0.4, "premium": 0.2}
    gen["month_weights"] = gen["month_weights"][:11]
    path = write_documents(tmp_path, docs)
    config_file = tmp_path / "config.yml"

    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert_problems(
        excinfo.value,
        problem(config_file, "generate_data.closed_days[1]", "'Boxing Day' is not a day of the year", "MM-DD"),
        problem(config_file, "generate_data.brand_tier_affinity", "sum to 1.1", "must sum to 1"),
        problem(config_file, "generate_data.month_weights", "11 values", "give 12, January first"),
    )


# --- prepare_features ----------------------------------------------------------------------------

def test_a_model_feature_matching_nothing_is_refused_but_data_dependent_ones_pass(tmp_path, docs):
    features = docs["config"]["prepare_features"]["model_features"]
    features += ["colour_share__*", "brand_tier_share__premium", "dept_share__home"]
    path = write_documents(tmp_path, docs)
    with pytest.raises(ConfigError, match=problem(path, "prepare_features.model_features",
                                                  "'colour_share__*' matches no behavioural feature")) as caught:
        load_config(path)
    assert len(caught.value.problems) == 1, "attribute and department patterns are valid before any data"


