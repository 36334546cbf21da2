"""Stage 05's config section, ``profile_export``: its typed form and its checks."""

from __future__ import annotations

import dataclasses

from core.framework.schema import Range, spec


@dataclasses.dataclass(frozen=True)
class RecommendationsConfig:
    """Stage 05: the next-best classes of every segmented customer, and their measurement (issue 15)."""

    top_k: int = spec(minimum=1, help="classes recommended per customer (recommendations.parquet)")
    evaluation_window_days: int = spec(minimum=1, help="the evaluation fits on the lines up to the analysis "
                                                       "date minus this many days and scores the classes each "
                                                       "customer bought after; the blend weights are chosen "
                                                       "one window earlier")
    evaluation_customers: int = spec(50_000, minimum=1000, help="customers the temporal holdout and the "
                                     "segments' cross-sell comparison score at most: a seeded sample of the "
                                     "evaluable customers when there are more (every one at the default size)")
    evaluation_fit_customers: int = spec(250_000, minimum=10_000, help="customers the evaluation's fits (the "
                                         "weights' validation split, the temporal holdout, the cross-sell "
                                         "comparison) are made from at most: a seeded sample of the segmented "
                                         "customers when there are more (every one at the default size and at "
                                         "100,000); the recommendations always come from every customer")


@dataclasses.dataclass(frozen=True)
class ProfileExportConfig:
    """Stage 05: segment profiles, exports and report."""

    top_departments: int = spec(minimum=1, help="departments listed per segment")
    top_classes: int = spec(minimum=0, help="classes listed per segment")
    value_quantiles: Range = spec(maximum=1.0, help="[low, high] population quantiles of net revenue "
                                                    "separating low, mid and high value")
    lapsed_after_days: int = spec(minimum=1, help="a customer with no order for this many days is lapsed")
    currency: str = spec(help="symbol written before amounts in descriptions")
    min_segment_size: int = spec(minimum=1, help="smaller segments are not described in detail in the "
                                                 "agent export and the report")
    describe_columns: tuple[str, ...] = spec(help="profile columns summarised per segment (demographics); "
                                                  "never direct identifiers")
    age_bands: tuple[int, ...] = spec(minimum=0, help="ascending age band edges, e.g. [25, 35, 45] gives "
                                                      "under 25, 25-34, 35-44, 45+")
    explain_features: int = spec(minimum=1, help="most distinguishing features listed per segment")
    projection_sample_size: int = spec(minimum=10, help="customers drawn in the report's 2-D projection")
    also_profile: tuple[str, ...] = spec(help="other segmentations to export too, as <method>_<space>")
    recommendations: RecommendationsConfig = spec(help="next-best classes per customer")
