"""Stage 04's config section, ``cluster``: its typed form and its checks."""

from __future__ import annotations

import dataclasses
import datetime as dt

from core.framework.schema import Problems, Range, spec

CLUSTER_METHODS = ("hdbscan", "gmm", "fcm", "kmeans", "sharpkmeans", "countmix")
MATRIX_SPACES = ("raw", "latent")
SPACES = MATRIX_SPACES + ("counts",)
#: The space of each customer's units per class (stage 02's ``class_spend_long.parquet``), and the methods fitted
#: in it: only there, and never in another space (a mixture of Dirichlet-multinomials models counts, the other
#: methods distances between rows of the model matrix).
COUNTS_SPACE = "counts"
COUNT_METHODS = ("countmix",)


def fits_in(method: str, space: str) -> bool:
    """Whether stage 04 fits ``method`` in ``space``: count methods in the counts space, the others elsewhere."""
    return (method in COUNT_METHODS) == (space == COUNTS_SPACE)


def fitted_pairs(methods, spaces) -> list[tuple[str, str]]:
    """Every (method, space) stage 04 fits, space by space in config order (:func:`fits_in`)."""
    return [(m, s) for s in spaces for m in methods if fits_in(m, s)]


@dataclasses.dataclass(frozen=True)
class HdbscanConfig:
    """Stage 04: HDBSCAN."""

    min_cluster_size_fraction: float = spec(exclusive_minimum=0.0, maximum=0.5,
                                            help="smallest cluster as a share of customers")
    min_samples: int = spec(minimum=1, help="neighbours defining a core point; larger = more conservative")
    cluster_selection_method: str = spec(choices=("eom", "leaf"),
                                         help="eom keeps the most persistent clusters, leaf the finest ones")
    reassign_noise: bool = spec(help="give noise customers their most likely cluster (membership vectors), "
                                     "with a low strength; the noise ratio is still reported")
    search_min_samples: tuple[int, ...] = spec(minimum=1, help="empty: fit min_samples and "
                                               "cluster_selection_method as given; else these min_samples (and "
                                               "min_samples) are tried on the selection sample and the highest "
                                               "relative validity with at most max_noise noise is kept")
    max_noise: float = spec(minimum=0.0, maximum=1.0, help="the search's bound on the share of noise")
    search_selection_methods: tuple[str, ...] = spec(choices=("eom", "leaf"),
                                                     help="with search_min_samples: cluster selection methods "
                                                          "tried with each min_samples besides "
                                                          "cluster_selection_method; [] = only that one")
    search_min_cluster_size_fractions: tuple[float, ...] = spec(
        exclusive_minimum=0.0, maximum=0.5, help="with search_min_samples: smaller min_cluster_size_fraction values "
        "tried in turn, with every method and min_samples, only while no candidate leaves at most max_noise; "
        "[] = min_cluster_size_fraction only")
    search_sharpen_steps: tuple[int, ...] = spec(
        minimum=1, maximum=10, help="with search_min_samples, in the spaces of sharpen_spaces: data sharpening steps "
        "(each customer moved to the mean of its nearest neighbours, as many times) tried in turn, with every "
        "method, min_samples and size, only while no candidate leaves at most max_noise with at least half the most "
        "clusters found unsharpened; [] = never sharpen")
    sharpen_spaces: tuple[str, ...] = spec(choices=MATRIX_SPACES, help="spaces where search_sharpen_steps apply")
    sharpen_neighbours_fraction: float = spec(exclusive_minimum=0.0, maximum=0.5,
                                              help="neighbours a sharpening step averages, as a share of the "
                                                   "selection sample (the customers every row is moved "
                                                   "towards)")


@dataclasses.dataclass(frozen=True)
class GmmConfig:
    """Stage 04: Gaussian mixture."""

    n_components: Range = spec(minimum=1, help="[min, max] components; the number is chosen by `selection`")
    covariance_type: str = spec(choices=("full", "tied", "diag", "spherical"), help="covariance structure")
    n_init: int = spec(minimum=1, help="initialisations per candidate")
    selection: str = spec(choices=("silhouette", "bic"),
                          help="criterion choosing the number of components: silhouette of the hard assignment "
                               "on a sample (as k-means), or BIC (fell to the top of every range on persona sets)")


@dataclasses.dataclass(frozen=True)
class FcmConfig:
    """Stage 04: fuzzy c-means."""

    n_clusters: Range = spec(minimum=2, help="[min, max] clusters, chosen by `selection`")
    selection: str = spec(choices=("silhouette", "partition_coefficient"),
                          help="criterion choosing the number of clusters (partition coefficient and entropy "
                               "are reported either way)")
    fuzziness: float = spec(exclusive_minimum=1.0, help="fuzzifier m (> 1); with adaptive_fuzziness the largest used")
    adaptive_fuzziness: bool = spec(help="fuzzifier from the customers' number and dimension (Schwaemmle and "
                                         "Jensen 2010), at most fuzziness: m = 2 collapses every centre on "
                                         "many features")
    tolerance: float = spec(exclusive_minimum=0.0, help="stop when memberships change less than this between "
                                                         "iterations (root mean square per membership value)")
    max_iter: int = spec(minimum=1, help="maximum iterations")


@dataclasses.dataclass(frozen=True)
class KmeansConfig:
    """Stage 04: k-means."""

    n_clusters: Range = spec(minimum=2, help="[min, max] clusters; the number is chosen by silhouette")
    n_init: int = spec(minimum=1, help="initialisations per candidate")


@dataclasses.dataclass(frozen=True)
class SharpKmeansConfig:
    """Stage 04: k-means on the customers sharpened by their nearest neighbours (core.cluster.sharpened)."""

    n_clusters: Range = spec(minimum=2, help="[min, max] clusters; the number is chosen by silhouette on the "
                                             "sharpened customers")
    n_init: int = spec(minimum=1, help="initialisations per candidate")
    steps: int = spec(minimum=0, maximum=10, help="sharpening steps: each moves every customer to the mean of its "
                                                  "nearest neighbours among the selection sample; 0 = plain k-means")
    neighbours_fraction: float = spec(exclusive_minimum=0.0, maximum=0.5,
                                      help="neighbours a sharpening step averages, as a share of the selection "
                                           "sample (the customers every row is moved towards)")


@dataclasses.dataclass(frozen=True)
class CountmixConfig:
    """Stage 04: a mixture of Dirichlet-multinomials on each customer's units per department and class
    (core.cluster.count_mixture), fitted in the counts space only."""

    n_components: Range = spec(minimum=1, help="[min, max] components; the number is chosen by BIC on the "
                                               "selection sample")
    scan_step: int = spec(minimum=1, help="BIC is measured at every scan_step-th count of the range, then at the "
                                          "neighbours of the best until it is a local minimum; 1 = every count")
    ward_sample_size: int = spec(minimum=50, help="customers of Ward's tree that starts every fit (square roots "
                                                  "of their department and class shares); the others join the "
                                                  "nearest Ward centre")
    tol: float = spec(exclusive_minimum=0.0, help="EM stops when the mean log-likelihood per customer gains less "
                                                  "than this")
    scan_tol: float = spec(exclusive_minimum=0.0, help="tol of the fits BIC compares (the chosen count is refit "
                                                       "with tol)")
    max_iter: int = spec(minimum=1, help="maximum EM iterations per fit")
    # Defaults, so a config written before the restarts existed still loads; they are the shipped values.
    ward_restarts: int = spec(default=4, minimum=0,
                              help="the fit of the chosen count also starts from the Ward cuts of this many subsets "
                                   "of the tree's customers; each start runs EM with scan_tol and the most likely "
                                   "is run on to tol; 0 = the tree's own cut only")
    restart_fraction: float = spec(default=0.5, exclusive_minimum=0.0, maximum=1.0,
                                   help="share of the tree's customers in each restart's subset")


@dataclasses.dataclass(frozen=True)
class PrimaryConfig:
    """Stage 04: the segmentation stage 05 describes."""

    method: str = spec(choices=CLUSTER_METHODS + ("auto",),
                       help="method feeding stage 05, or auto: stability first (the highest consensus with "
                            "the other segmentations among those reaching evaluation.min_stability, else "
                            "consensus x stability squared), never from the ground truth")
    space: str = spec(choices=SPACES + ("auto",), help="space feeding stage 05, or auto")
    min_segments_share: float = spec(minimum=0.0, maximum=1.0,
                                     help="auto: a candidate needs at least this share of the most segments "
                                          "any segmentation found (a coarse 2-segment split is stable and "
                                          "agrees with other coarse ones, but says little); 0 = none")
    min_latent_explained: float = spec(minimum=0.0, maximum=1.0,
                                       help="auto: the latent space's candidates are set aside when stage 03's "
                                            "network reconstructs less than this share of the held-out "
                                            "customers' deviation from the column means (an untrained network "
                                            "explains about 0; the default data about 0.5; overlapping persona "
                                            "sets 0.29 to 0.40, where a 3-dimensional latent space kept too "
                                            "little); 0 = never")
    min_consensus_share: float = spec(default=0.0, minimum=0.0, maximum=1.0,
                                      help="auto: a candidate needs a consensus of at least this share of the "
                                           "highest any candidate reaches (a stable split the other methods "
                                           "barely agree with is another structure, not the data's); 0 = none")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """Stage 04: how each segmentation is evaluated (after fitting; nothing here changes a fit)."""

    ground_truth: str | None = spec(help="column of customers.parquet with each customer's known group "
                                         "(the generator's persona), for evaluation only; null = none")
    reseeds: int = spec(minimum=2, help="refits with other seeds for the reseed stability")
    bootstraps: int = spec(minimum=2, help="refits on subsamples for the bootstrap stability")
    bootstrap_fraction: float = spec(exclusive_minimum=0.0, maximum=1.0,
                                     help="share of the stability sample in each bootstrap subsample "
                                          "(drawn without replacement)")
    stability_sample_size: int = spec(minimum=50, help="customers sampled for the stability refits")
    supervised_reference: bool = spec(help="with a ground truth: cross-validate a gradient-boosting classifier "
                                           "predicting it, the ARI the features allow")
    reference_sample_size: int = spec(minimum=50, help="customers sampled for the supervised reference")
    reference_folds: int = spec(minimum=2, help="cross-validation folds of the supervised reference")
    min_stability: float = spec(minimum=0.0, maximum=1.0,
                                help="the stability (ARI across refits) a primary should reach: primary auto "
                                     "chooses among the segmentations reaching it first, and says in its reason "
                                     "when none does")


SNAPSHOT_PERIODS = ("month", "quarter", "half_year", "year")


@dataclasses.dataclass(frozen=True)
class SnapshotsConfig:
    """Stage 04: the customer base segmented again at a series of dates, from each one's trailing window."""

    enabled: bool = spec(help="segment every customer active in the window before each snapshot date with the "
                              "trained models (segment_history.parquet, transitions.csv); false = none")
    every: str = spec(choices=SNAPSHOT_PERIODS, help="snapshot at the last day of every such period of the "
                                                     "history after the warm-up (when dates is empty)")
    dates: tuple[dt.date, ...] = spec(help="snapshot dates instead of every; each within the history and at "
                                           "least warmup_days after its first day; [] = every")
    window_days: int = spec(minimum=28, help="days of behaviour each snapshot reads, ending on its date: longer "
                                             "is steadier, shorter follows a change sooner")
    warmup_days: int = spec(minimum=0, help="no snapshot before this many days after the history's first day "
                                            "(at least window_days keeps every window whole)")
    switch_ratio: float = spec(minimum=1.0, help="a customer leaves their segment of the previous snapshot only "
                                                 "when the best segment's membership is more than this many "
                                                 "times that segment's (hysteresis); 1 = none. Needs a primary "
                                                 "method with memberships (HDBSCAN, GMM, fuzzy c-means)")
    min_orders: int = spec(minimum=0, help="a customer with fewer orders than this in the window is weak "
                                           "evidence: they leave their segment only past weak_switch_ratio; "
                                           "0 = every customer uses switch_ratio")
    weak_switch_ratio: float = spec(minimum=1.0, help="switch_ratio for a customer with fewer than min_orders "
                                                      "orders in the window (a few orders move a window's "
                                                      "features by chance); at least switch_ratio")


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """Stage 04: clustering."""

    methods: tuple[str, ...] = spec(choices=CLUSTER_METHODS, help="methods to fit")
    spaces: tuple[str, ...] = spec(choices=SPACES, help="feature spaces to cluster in")
    primary: PrimaryConfig = spec()
    n_jobs: int = spec(minimum=1, help="worker processes fitting the methods and spaces side by side "
                                       "(1 = all in the stage's own process)")
    fit_sample_size: int = spec(minimum=100, help="models are fitted on at most this many customers (a seeded "
                                                  "sample) and score everyone")
    selection_sample_size: int = spec(minimum=100, help="customers sampled to choose the number of clusters; "
                                                        "the chosen model is refit on the fit sample")
    silhouette_sample_size: int = spec(minimum=100, help="customers sampled for silhouette, Davies-Bouldin "
                                                         "and Calinski-Harabasz")
    count_stability: bool = spec(help="k-means, fuzzy c-means and a mixture by silhouette choose their number of "
                                      "clusters by silhouette x split stability: each candidate fitted on two "
                                      "disjoint halves of the selection sample, scored by the halves' mean "
                                      "silhouette times their agreement (ARI); false = silhouette of one fit on "
                                      "the whole sample")
    high_confidence: float = spec(minimum=0.0, maximum=1.0,
                                  help="strength at or above which a customer counts as high-confidence")
    match_previous: bool = spec(help="keep the previous run's segment ids (Hungarian matching) and write "
                                     "migration.csv")
    hdbscan: HdbscanConfig = spec()
    gmm: GmmConfig = spec()
    fcm: FcmConfig = spec()
    kmeans: KmeansConfig = spec()
    evaluation: EvaluationConfig = spec()
    snapshots: SnapshotsConfig = spec()
    # A default, so a config written before the method existed (and not listing it in methods) still loads (last:
    # dataclass fields with a default follow those without).
    sharpkmeans: SharpKmeansConfig = spec(default=SharpKmeansConfig(n_clusters=(2, 20), n_init=10, steps=3,
                                                                   neighbours_fraction=0.02))
    countmix: CountmixConfig = spec(default=CountmixConfig(n_components=(2, 20), scan_step=3, ward_sample_size=4000,
                                                           tol=1e-3, scan_tol=1e-2, max_iter=200, ward_restarts=4,
                                                           restart_fraction=0.5))


def check_cluster(cfg: ClusterConfig, problems: Problems) -> None:
    """Cluster-count ranges that can be honoured whatever the data.

    A number of clusters is a whole number. A range's candidates are scored
    on a sample (``selection_sample_size`` customers, of which
    ``silhouette_sample_size`` for a silhouette) of the customers fitted (at
    most ``fit_sample_size``), and a score needs more customers than
    clusters: a top the samples can never hold is refused here. A top beyond
    the customers a run actually has is known only in stage 04, which clamps
    it with a warning (:func:`core.cluster.segmentation.clamped_ranges`).
    """
    limits = {"fit_sample_size": cfg.fit_sample_size, "selection_sample_size": cfg.selection_sample_size}
    by_silhouette = dict(limits, silhouette_sample_size=cfg.silhouette_sample_size)
    for key, values, scored_on in (("gmm.n_components", cfg.gmm.n_components,
                                    by_silhouette if cfg.gmm.selection == "silhouette" else limits),
                                   ("fcm.n_clusters", cfg.fcm.n_clusters,
                                    by_silhouette if cfg.fcm.selection == "silhouette" else limits),
                                   ("kmeans.n_clusters", cfg.kmeans.n_clusters, by_silhouette),
                                   ("sharpkmeans.n_clusters", cfg.sharpkmeans.n_clusters, by_silhouette),
                                   ("countmix.n_components", cfg.countmix.n_components, limits)):
        low, high = values
        shown = [int(v) if float(v).is_integer() else v for v in values]
        if not (float(low).is_integer() and float(high).is_integer()):
            problems.add(f"cluster.{key}", f"{shown}: numbers of clusters are whole numbers")
            continue
        # One candidate is fitted on the fit sample, without choosing; a range is chosen on the samples.
        if low == high:
            scored_on = {"fit_sample_size": cfg.fit_sample_size}
        setting, customers = min(scored_on.items(), key=lambda item: item[1])
        if high >= customers:
            problems.add(f"cluster.{key}", f"{shown} reaches beyond what can be fitted and scored: "
                                           f"cluster.{setting} is {customers:,} customers, which hold at most "
                                           f"{customers - 1:,} clusters; lower the top of the range, or raise "
                                           f"cluster.{setting}")


def check_pairs(cfg: ClusterConfig, problems: Problems) -> None:
    """Methods and spaces that make sense together: the counts space and the count methods come as a pair."""
    counting = [m for m in cfg.methods if m in COUNT_METHODS]
    if counting and COUNTS_SPACE not in cfg.spaces:
        problems.add("cluster.spaces", f"{list(cfg.spaces)} has no {COUNTS_SPACE} space, the only one "
                                       f"{', '.join(counting)} is fitted in; add {COUNTS_SPACE}, or remove "
                                       f"{', '.join(counting)} from cluster.methods")
    if COUNTS_SPACE in cfg.spaces and not counting:
        problems.add("cluster.spaces", f"{COUNTS_SPACE} is listed but no method of cluster.methods is fitted in it "
                                       f"(only {', '.join(COUNT_METHODS)}); add one, or remove {COUNTS_SPACE}")
    primary = cfg.primary
    if primary.method != "auto" and primary.space != "auto" and primary.method in cfg.methods \
            and primary.space in cfg.spaces and not fits_in(primary.method, primary.space):
        problems.add("cluster.primary", f"{primary.method}/{primary.space} is never fitted: "
                                        f"{', '.join(COUNT_METHODS)} only in the {COUNTS_SPACE} space, the other "
                                        f"methods only in the others")


def check_snapshots(cfg: SnapshotsConfig, history_start: dt.date, history_end: dt.date, problems: Problems,
                    where: str = "") -> None:
    """Snapshot settings a history from ``history_start`` to ``history_end`` (inclusive) can honour.

    Run when the config loads for generated data (the history is
    ``data.history_*``) and by stage 04 on the history the log really
    holds. ``where`` names that history in the messages. Too little history
    for more than one snapshot is not an error: stage 04 writes one and says
    so.
    """
    if not cfg.enabled:
        return
    if cfg.weak_switch_ratio < cfg.switch_ratio:
        problems.add("cluster.snapshots.weak_switch_ratio", f"{cfg.weak_switch_ratio:g} is below switch_ratio "
                                                            f"({cfg.switch_ratio:g}): weak evidence would move a "
                                                            f"customer more easily; use at least {cfg.switch_ratio:g}")
    days = (history_end - history_start).days + 1
    span = f"the history{where} ({history_start} to {history_end}, {days:,} days)"
    off = "or turn snapshots off (cluster.snapshots.enabled: false)"
    if cfg.window_days > days:
        problems.add("cluster.snapshots.window_days", f"{cfg.window_days:,} days is longer than {span}; use at "
                                                      f"most {days:,}, {off}")
    if cfg.warmup_days >= days:
        problems.add("cluster.snapshots.warmup_days", f"{cfg.warmup_days:,} days leaves no day of {span} to "
                                                      f"snapshot; use fewer than {days:,}, {off}")
    first = history_start + dt.timedelta(days=cfg.warmup_days)
    for i, day in enumerate(cfg.dates):
        if not history_start <= day <= history_end:
            problems.add(f"cluster.snapshots.dates[{i}]", f"{day} is outside {span}; give dates within it")
        elif day < first:
            problems.add(f"cluster.snapshots.dates[{i}]", f"{day} is before the end of the warm-up ({first}: "
                                                          f"cluster.snapshots.warmup_days = {cfg.warmup_days} "
                                                          f"after {history_start}); give a later date or a "
                                                          f"shorter warm-up")
    if len(set(cfg.dates)) != len(cfg.dates):
        problems.add("cluster.snapshots.dates", f"{[str(d) for d in cfg.dates]} lists a date twice")
