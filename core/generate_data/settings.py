"""Stage 01's config sections: ``data``, ``generate_data`` (how synthetic customers shop) and ``ingest``.

Each section's typed form and the checks that need only stage 01's knowledge. Every key is required in ``config.yml``;
personas (``personas.yml``) may override a few per persona.
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime as dt
import fnmatch
from pathlib import Path

from core.framework.schema import Problems, Range, check_sums_to_one, spec, suggest
from core.generate_data.ingest import CUSTOMER_TARGETS, REQUIRED_CUSTOMER, REQUIRED_TRANSACTION, TRANSACTION_TARGETS

BRAND_TIERS = ("value", "mid", "premium")
SIZE_SCALES = ("ladies", "mens", "ladies_footwear", "mens_footwear", "kids", "kids_footwear", "none")
ADULT_SCALES = ("ladies", "mens", "ladies_footwear", "mens_footwear")
KIDS_SCALES = ("kids", "kids_footwear")


@dataclasses.dataclass(frozen=True)
class BrandTierConfig:
    """One brand tier of the catalog."""

    price_factor: float = spec(exclusive_minimum=0.0, help="multiplies the class's typical price")
    catalog_share: float = spec(minimum=0.0, maximum=1.0, help="share of a class's items in this tier")
    brands: tuple[str, ...] = spec(help="brand names of the tier")


@dataclasses.dataclass(frozen=True)
class SizeRule:
    """Which sizes a class comes in: the first rule whose patterns match wins."""

    department: str = spec(help="department name or fnmatch pattern (case-insensitive)")
    classes: str = spec(help="class name or fnmatch pattern (case-insensitive)")
    scale: str = spec(choices=SIZE_SCALES, help="size scale of matching classes")


@dataclasses.dataclass(frozen=True)
class CatalogConfig:
    """The product catalog: items per class, brands, styles, colours, sizes, prices."""

    items_per_class: Range = spec(minimum=1, help="[min, max] products (style and colour) per class")
    item_price_sigma: float = spec(minimum=0.0, help="lognormal spread of item prices around class x tier")
    department_price_ranges: dict[str, Range] = spec(
        help="[min, max] typical class price per merchandise department, in currency units")
    brand_tiers: dict[str, BrandTierConfig] = spec(help="value, mid and premium")
    styles: tuple[str, ...] = spec(help="style names")
    department_styles: dict[str, tuple[str, ...]] = spec(
        help="styles a department's items can have; departments not listed take every style")
    colors: tuple[str, ...] = spec(help="colour names")
    size_rules: tuple[SizeRule, ...] = spec(help="first-match rules giving each class its size scale")
    adult_sizes: dict[str, dict[str, float]] = spec(
        help="per adult scale (ladies, mens, ladies_footwear, mens_footwear): size -> share of customers")
    kids_size_bands: dict[str, Range] = spec(help="kids' clothing size -> [from, to) child age in years")
    kids_footwear_bands: dict[str, Range] = spec(help="kids' shoe size -> [from, to) child age in years")


@dataclasses.dataclass(frozen=True)
class ChannelConfig:
    """Store or online, per order."""

    enabled: bool = spec(help="false: channel is null")
    online_share: float = spec(minimum=0.0, maximum=1.0, help="mean share of a customer's orders placed online")
    concentration: float = spec(exclusive_minimum=0.0,
                                help="Beta concentration of customers' online shares around the mean")
    online_return_multiplier: float = spec(minimum=0.0, help="online lines are returned this many times as often")


@dataclasses.dataclass(frozen=True)
class NonMerchandiseConfig:
    """Lines a till records besides goods: bag levy, gift cards, charity, concessions, data noise."""

    bag_levy_probability: float = spec(minimum=0.0, maximum=1.0, help="share of store orders buying a bag")
    bag_levy_price: float = spec(minimum=0.0, help="price of one bag")
    gift_card_probability: float = spec(minimum=0.0, maximum=1.0, help="share of orders with a gift card")
    gift_card_december_multiplier: float = spec(minimum=0.0, help="gift cards are this much likelier in December")
    gift_card_values: tuple[float, ...] = spec(minimum=0.0, help="gift card face values")
    charity_probability: float = spec(minimum=0.0, maximum=1.0, help="share of store orders with a donation")
    charity_values: tuple[float, ...] = spec(minimum=0.0, help="donation amounts")
    concession_probability: float = spec(minimum=0.0, maximum=1.0,
                                         help="share of store orders with a concession line")
    concession_price_range: Range = spec(help="[min, max] concession line value")
    data_quality_rate: float = spec(minimum=0.0, maximum=0.05,
                                    help="share of merchandise lines recorded under a DUMMY, UNASSIGNED or "
                                         "Unknown class (source-system noise)")


@dataclasses.dataclass(frozen=True)
class IdentityConfig:
    """Fake names, emails, phones and addresses (Faker)."""

    enabled: bool = spec(help="false: identity columns are null")
    locale: str = spec(help="Faker locale, e.g. en_GB")
    pool_size: int = spec(minimum=10, help="values Faker makes per field; customers draw from these pools")


@dataclasses.dataclass(frozen=True)
class CustomerVariation:
    """How far each customer's mixes stray from their persona's (Dirichlet concentrations)."""

    department_concentration: float = spec(exclusive_minimum=0.0,
                                           help="Dirichlet concentration of a customer's department mix around "
                                                "the persona's: a department of share p varies between customers "
                                                "with standard deviation sqrt(p(1-p)/(c+1)); higher is tighter")
    class_concentration: float = spec(exclusive_minimum=0.0,
                                      help="Dirichlet concentration of a customer's weights over their usual "
                                           "classes of a department (around equal weights)")
    brand_tier_concentration: float = spec(exclusive_minimum=0.0,
                                           help="Dirichlet concentration of a customer's brand-tier mix around "
                                                "the persona's brand_tier_affinity")
    style_concentration: float = spec(exclusive_minimum=0.0,
                                      help="Dirichlet concentration of a customer's style weights around the "
                                           "persona's style_affinity (normalised)")


@dataclasses.dataclass(frozen=True)
class HouseholdConfig:
    """Customers who also shop for a second persona of their household."""

    share: float = spec(minimum=0.0, maximum=1.0,
                        help="share of the customers of a persona with household_members who shop for one "
                             "of them too (a parent for a teenager, a couple)")
    member_line_share: Range = spec(maximum=1.0,
                                    help="[min, max] share of such a customer's lines bought for the other "
                                         "persona (uniform per customer)")


@dataclasses.dataclass(frozen=True)
class ReportTolerances:
    """How far the generated data may stray from its config before stage 01 fails."""

    persona_mix_p_value: float = spec(minimum=0.0, maximum=1.0,
                                      help="fail when the chi-square test of the persona mix is below this")
    share_z: float = spec(minimum=0.0,
                          help="a persona's realised department, brand-tier and usual-class line shares may "
                               "differ from what personas.yml implies by this many standard errors (computed "
                               "from the number of customers, orders and lines and the customer_variation "
                               "concentrations)")
    range_relative: float = spec(minimum=0.0,
                                 help="a persona's mean order value and visit rate may fall this share "
                                      "outside their configured [min, max]")
    return_rate_abs: float = spec(minimum=0.0, maximum=1.0,
                                  help="a department's realised return rate may differ from the configured one "
                                       "by share_z binomial standard errors, or by this much when larger")
    scenario_uplift_abs: float = spec(minimum=0.0,
                                      help="largest allowed |realised - expected| uplift of a scenario's "
                                           "effect inside its window (or a quarter of the expected uplift, "
                                           "when larger)")
    min_group_size: int = spec(minimum=1, help="personas and departments with fewer customers or lines "
                                               "than this are reported but not checked")


@dataclasses.dataclass(frozen=True)
class GenerateDataConfig:
    """Stage 01: the synthetic transaction generator."""

    chunk_size: int = spec(minimum=1, help="customers per chunk (rounded up to whole blocks of 1,000); "
                                           "bounds memory; the data does not depend on it")
    workers: int = spec(minimum=1, help="processes drawing blocks side by side (1 = in this process); "
                                        "the data does not depend on it")
    start_customer_share: float = spec(minimum=0.0, maximum=1.0,
                                       help="share of customers already shopping on history_start; the rest "
                                            "join uniformly over the window")
    visit_rate_shape: float = spec(exclusive_minimum=0.0,
                                   help="gamma shape of customers' visit rates around the persona's "
                                        "frequency (coefficient of variation = 1/sqrt(shape))")
    dropout_probability: float = spec(minimum=0.0, maximum=1.0,
                                      help="mean chance a customer stops shopping after a purchase (BG/NBD)")
    dropout_concentration: float = spec(exclusive_minimum=0.0,
                                        help="Beta concentration of customers' dropout chances")
    basket_dispersion: float = spec(exclusive_minimum=0.0,
                                    help="negative binomial size of extra lines per order: lower is "
                                         "more over-dispersed")
    basket_focus: float = spec(minimum=0.0, maximum=1.0,
                               help="share of an order's lines from the order's main department")
    exploration_share: float = spec(minimum=0.0, maximum=1.0,
                                    help="share of a department's lines outside the customer's usual classes")
    classes_per_department: Range = spec(minimum=1,
                                         help="[min, max] classes a customer picks in a department "
                                              "preferred at department level")
    brand_tier_affinity: dict[str, float] = spec(minimum=0.0,
                                                 help="default share of lines per brand tier; sums to 1")
    style_affinity: dict[str, float] = spec(minimum=0.0, help="default weight per style")
    month_weights: tuple[float, ...] = spec(minimum=0.0, help="relative visits per month, January first")
    weekday_weights: tuple[float, ...] = spec(minimum=0.0, help="relative visits per weekday, Monday first")
    closed_days: tuple[str, ...] = spec(help="MM-DD days the shops are shut, e.g. 12-25")
    quantity_probabilities: tuple[float, ...] = spec(minimum=0.0,
                                                     help="P(quantity = 1), P(quantity = 2), ...; sums to 1")
    unit_price_sigma: float = spec(minimum=0.0, help="lognormal spread of a line's regular price around "
                                                     "its SKU's base price")
    promotion_share: float = spec(minimum=0.0, maximum=1.0, help="share of lines on promotion outside sales")
    promotion_depth: Range = spec(maximum=1.0, help="[min, max] promotion discount as a share of price")
    return_rate: float = spec(minimum=0.0, maximum=1.0, help="share of lines returned where not set per department")
    department_return_rates: dict[str, float] = spec(minimum=0.0, maximum=1.0,
                                                     help="share of lines returned, per department")
    return_delay_days: Range = spec(help="[min, max] days between purchase and return")
    regions: dict[str, float] = spec(minimum=0.0, help="region -> share of customers; sums to 1")
    customer_variation: CustomerVariation = spec()
    households: HouseholdConfig = spec()
    catalog: CatalogConfig = spec()
    channel: ChannelConfig = spec()
    non_merchandise: NonMerchandiseConfig = spec()
    identity: IdentityConfig = spec()
    report_tolerances: ReportTolerances = spec()


def check_generate_data(gen: GenerateDataConfig, merchandise: list[str], class_names: dict[str, tuple[str, ...]],
                        problems: Problems, key: str = "generate_data") -> None:
    """Cross-field checks of the section against the hierarchy's merchandise departments."""
    check_sums_to_one(dict(enumerate(map(float, gen.quantity_probabilities))), problems,
                      f"{key}.quantity_probabilities")
    check_sums_to_one(gen.regions, problems, f"{key}.regions")
    check_tier_mix(gen.brand_tier_affinity, problems, f"{key}.brand_tier_affinity")
    check_styles(gen.style_affinity, gen.catalog.styles, problems, f"{key}.style_affinity")
    if len(gen.month_weights) != 12:
        problems.add(f"{key}.month_weights", f"{len(gen.month_weights)} values; give 12, January first")
    if len(gen.weekday_weights) != 7:
        problems.add(f"{key}.weekday_weights", f"{len(gen.weekday_weights)} values; give 7, Monday first")
    for i, day in enumerate(gen.closed_days):
        if parse_month_day(day) is None:
            problems.add(f"{key}.closed_days[{i}]", f"{day!r} is not a day of the year; write MM-DD, e.g. 12-25")
    for dept in gen.department_return_rates:
        if dept not in merchandise:
            problems.add(f"{key}.department_return_rates.{dept}",
                         f"'{dept}' is not a merchandise department of the hierarchy"
                         f"{suggest(dept, merchandise)}; allowed: {', '.join(merchandise)}")
    cat = gen.catalog
    ckey = f"{key}.catalog"
    for dept in merchandise:
        if dept not in cat.department_price_ranges:
            problems.add(f"{ckey}.department_price_ranges", f"missing merchandise department '{dept}'")
    for field in ("department_price_ranges", "department_styles"):
        for dept in getattr(cat, field):
            if dept not in merchandise:
                problems.add(f"{ckey}.{field}.{dept}", f"'{dept}' is not a merchandise department"
                                                      f"{suggest(dept, merchandise)}; allowed: {', '.join(merchandise)}")
    if set(cat.brand_tiers) != set(BRAND_TIERS):
        problems.add(f"{ckey}.brand_tiers", f"has {', '.join(cat.brand_tiers)}; give exactly "
                                            f"{', '.join(BRAND_TIERS)}")
    else:
        check_sums_to_one({t: c.catalog_share for t, c in cat.brand_tiers.items()}, problems,
                          f"{ckey}.brand_tiers.*.catalog_share")
        for tier, conf in cat.brand_tiers.items():
            if not conf.brands:
                problems.add(f"{ckey}.brand_tiers.{tier}.brands", "empty; name at least one brand")
    for dept, styles in cat.department_styles.items():
        for style in styles:
            if style not in cat.styles:
                problems.add(f"{ckey}.department_styles.{dept}",
                             f"style '{style}' is not in catalog.styles: {', '.join(cat.styles)}")
    if not cat.colors or not cat.styles:
        problems.add(ckey, "styles and colors need at least one value each")
    for scale in ADULT_SCALES:
        if scale not in cat.adult_sizes:
            problems.add(f"{ckey}.adult_sizes", f"missing scale '{scale}'")
    for scale, shares in cat.adult_sizes.items():
        if scale not in ADULT_SCALES:
            problems.add(f"{ckey}.adult_sizes.{scale}", f"unknown scale; allowed: {', '.join(ADULT_SCALES)}")
        check_sums_to_one(shares, problems, f"{ckey}.adult_sizes.{scale}")
    for name in ("kids_size_bands", "kids_footwear_bands"):
        bands = getattr(cat, name)
        if not bands:
            problems.add(f"{ckey}.{name}", "empty; give at least one size band")
        for size, (low, high) in bands.items():
            if high <= low:
                problems.add(f"{ckey}.{name}.{size}", f"[{low}, {high}) is empty; write [from, to) ages")
    for i, rule in enumerate(cat.size_rules):
        matches = [d for d in merchandise if fnmatch.fnmatch(d.lower(), rule.department.lower())]
        if not matches:
            problems.add(f"{ckey}.size_rules[{i}].department",
                         f"'{rule.department}' matches no merchandise department")
        elif not any(fnmatch.fnmatch(c.lower(), rule.classes.lower()) for d in matches for c in class_names[d]):
            problems.add(f"{ckey}.size_rules[{i}].classes",
                         f"'{rule.classes}' matches no class of {', '.join(matches)}")


def check_tier_mix(mix: dict[str, float], problems: Problems, key: str) -> None:
    """A brand tier mix names each tier once and sums to 1."""
    unknown = sorted(set(mix) - set(BRAND_TIERS))
    if unknown:
        problems.add(key, f"unknown tier(s) {', '.join(unknown)}; allowed: {', '.join(BRAND_TIERS)}")
    check_sums_to_one(mix, problems, key)


def check_styles(weights: dict[str, float], styles: tuple[str, ...], problems: Problems, key: str) -> None:
    """Style weights name catalog styles and are not all zero."""
    unknown = sorted(set(weights) - set(styles))
    if unknown:
        problems.add(key, f"unknown style(s) {', '.join(unknown)}; allowed: {', '.join(styles)}")
    if weights and sum(weights.values()) <= 0:
        problems.add(key, "all weights are zero; give at least one positive weight")


def parse_month_day(text: str) -> tuple[int, int] | None:
    """``"12-25"`` -> ``(12, 25)``; None when it is not a day of a leap year."""
    import datetime as dt

    try:
        month, day = (int(part) for part in str(text).split("-"))
        dt.date(2024, month, day)
    except (ValueError, TypeError):
        return None
    return month, day


# ---------------------------------------------------------------------------
# Sections data and ingest

DATA_SOURCES = ("synthetic", "file")
FILE_FORMATS = ("csv", "parquet")
AMOUNT_KINDS = ("line", "order")
DECIMAL_MARKS = (".", ",")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What data the pipeline runs on."""

    source: str = spec(choices=DATA_SOURCES, help="synthetic: generated from the personas; file: a "
                                                  "retailer's own log, described in section ingest")
    n_customers: int = spec(minimum=1, help="number of synthetic customers")
    history_start: dt.date = spec(help="first day of the synthetic transaction history")
    history_end: dt.date = spec(help="last day of the synthetic transaction history")


def check_history(data: DataConfig, gen: GenerateDataConfig, problems: Problems) -> None:
    """The synthetic history has a day the shops open: on closed days nobody can visit.

    A history of a week or a month works; one whose every day is in
    ``generate_data.closed_days`` (e.g. 25-26 December with both closed) has
    no day to draw a first visit on.
    """
    if data.source != "synthetic" or data.history_end < data.history_start:
        return
    closed = {parse_month_day(day) for day in gen.closed_days}
    n_days = (data.history_end - data.history_start).days + 1
    days = (data.history_start + dt.timedelta(days=i) for i in range(n_days))
    if all((day.month, day.day) in closed for day in days):
        problems.add("data.history_start", f"{data.history_start} to data.history_end {data.history_end}: every day "
                                           f"is in generate_data.closed_days; the history needs at least one open "
                                           f"day")


@dataclasses.dataclass(frozen=True)
class TransactionsFileConfig:
    """Stage 01 with data.source file: the retailer's transaction log."""

    file: str | None = spec(help="the log (CSV or Parquet), relative to this file; null when data.source "
                                 "is synthetic")
    format: str = spec(choices=FILE_FORMATS, help="how the file is stored")
    columns: dict[str, str] = spec(help="the file's column name -> ours (README \"Using your own data\"); "
                                        "customer_id, order_date and line_amount are required")
    amount_is: str = spec(choices=AMOUNT_KINDS, help="line: each row is an order line (or a whole order, "
                                                     "when that is all the log has); order: each row is one "
                                                     "whole order, so an order id appears once")


@dataclasses.dataclass(frozen=True)
class CustomersFileConfig:
    """Stage 01 with data.source file: an optional customer profile file."""

    file: str | None = spec(help="profile file (CSV or Parquet), relative to this file; null for none")
    format: str = spec(choices=FILE_FORMATS, help="how the file is stored")
    columns: dict[str, str] = spec(help="the file's column name -> ours (a customers.parquet column); "
                                        "customer_id is required")


@dataclasses.dataclass(frozen=True)
class CsvConfig:
    """How CSV files are read."""

    delimiter: str = spec(help="one character between fields, or the word tab")
    decimal: str = spec(choices=DECIMAL_MARKS, help="decimal mark of numbers; the other mark may group "
                                                    "thousands (1.234,56 or 1,234.56)")
    encoding: str = spec(help="text encoding, e.g. utf-8, cp1252, latin-1")


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """Stage 01 with data.source file: reading a retailer's own data."""

    transactions: TransactionsFileConfig = spec()
    customers: CustomersFileConfig = spec()
    csv: CsvConfig = spec()
    date_format: str | None = spec(help="strptime format of dates written as text, e.g. '%d/%m/%Y' or "
                                        "'%Y-%m-%d %H:%M:%S'; null = ISO 8601 (2024-03-31, "
                                        "2024-03-31T14:05:00)")
    latest_date: dt.date | None = spec(help="rows dated after this day are rejected as in the future; "
                                            "null = the day the stage runs")
    max_rejected_share: float = spec(minimum=0.0, maximum=1.0,
                                     help="the stage stops when a larger share of a file's rows is rejected")


def check_ingest(ingest: IngestConfig, reading: bool, path: Path, problems: Problems) -> dict[str, Path]:
    """Column mappings name our columns and, with ``data.source: file``, the files exist.

    Returns the files stage 01 reads, resolved against the config file's folder.
    """
    for role, section, targets, required in (
            ("transactions", ingest.transactions, TRANSACTION_TARGETS, REQUIRED_TRANSACTION),
            ("customers", ingest.customers, CUSTOMER_TARGETS, REQUIRED_CUSTOMER)):
        key = f"ingest.{role}.columns"
        seen: dict[str, str] = {}
        for theirs, ours in section.columns.items():
            if ours not in targets:
                problems.add(f"{key}.{theirs}", f"'{ours}' is not a column we know{suggest(ours, list(targets))}; "
                                                f"map each of your columns to one of: {', '.join(targets)}")
            elif ours in seen:
                problems.add(f"{key}.{theirs}", f"'{ours}' is already mapped from '{seen[ours]}'; map one of "
                                                f"your columns to each of ours")
            seen.setdefault(ours, theirs)
        used = reading and (role == "transactions" or section.file is not None)
        missing = [c for c in required if c not in seen]
        if used and missing:
            problems.add(key, f"no column maps to {', '.join(missing)}; add '<your column name>: {missing[0]}' "
                              f"(required: {', '.join(required)})")
        if role == "transactions" and "class" in seen and "department" not in seen:
            problems.add(f"{key}.{seen['class']}", "class is mapped but department is not; a class is placed "
                                                   "within its department: map the department column too")
    delimiter = ingest.csv.delimiter
    if delimiter != "tab" and len(delimiter) != 1:
        problems.add("ingest.csv.delimiter", f"{delimiter!r} is not one character; write e.g. ',' or ';' "
                                             f"or the word tab")
    try:
        codecs.lookup(ingest.csv.encoding)
    except LookupError:
        problems.add("ingest.csv.encoding", f"{ingest.csv.encoding!r} is not a known text encoding; use e.g. "
                                            f"utf-8, cp1252 or latin-1")
    if ingest.date_format is not None and "%" not in ingest.date_format:
        problems.add("ingest.date_format", f"{ingest.date_format!r} has no % directive; write a strptime "
                                           f"format such as '%d/%m/%Y', or null for ISO 8601 dates")
    files: dict[str, Path] = {}
    if not reading:
        return files
    if ingest.transactions.file is None:
        problems.add("ingest.transactions.file", "null, but data.source is file; give the path of your "
                                                 "transaction log, relative to this file")
    for role, name in (("transactions", ingest.transactions.file), ("customers", ingest.customers.file)):
        if name is None:
            continue
        named = path.parent / name
        if not named.is_file():
            problems.add(f"ingest.{role}.file", f"{name!r} names {named}, which was not found; give a path "
                                                f"relative to {path.parent}")
        files[role] = named
    return files
