"""The synthetic product catalog: items (style and colour) in every size of their class's scale.

A class gets ``items_per_class`` items; each item has a brand from one of the
value, mid and premium tiers, a style, a colour and a base price (the class's
typical price times the tier's price factor, spread lognormally). An item
exists in every size of its class's size scale, and each size is a SKU, as
in a retailer's stock file.
"""

from __future__ import annotations

import dataclasses
import fnmatch

import numpy as np
import pandas as pd

from core.generate_data.settings import BRAND_TIERS, KIDS_SCALES, SIZE_SCALES, CatalogConfig
from core.domain.hierarchy import Hierarchy, slug


@dataclasses.dataclass(frozen=True)
class Catalog:
    """Products and the index arrays the generator samples from.

    Attributes
    ----------
    products : DataFrame
        One row per SKU, columns of :data:`core.domain.tables.PRODUCT_TABLE`.
    departments : list of str
        Merchandise departments, in hierarchy order (the generator's department codes).
    class_department : ndarray of int
        Department code of each class (classes numbered in hierarchy order).
    class_names : list of str
    class_first_item, class_n_items : ndarray of int
        Items of class ``k`` are ``class_first_item[k]`` to ``+ class_n_items[k] - 1``.
    class_scale : ndarray of int
        Index in :data:`SIZE_SCALES` of each class's size scale.
    item_class, item_tier, item_style, item_first_sku : ndarray of int
    item_price : ndarray of float
        Base price of each item (all its sizes cost the same).
    scale_sizes : dict of str to list of str
        The sizes of each scale, in SKU order.
    """

    products: pd.DataFrame
    departments: list[str]
    class_department: np.ndarray
    class_names: list[str]
    class_first_item: np.ndarray
    class_n_items: np.ndarray
    class_scale: np.ndarray
    item_class: np.ndarray
    item_tier: np.ndarray
    item_style: np.ndarray
    item_color: np.ndarray
    item_brand: np.ndarray
    item_first_sku: np.ndarray
    item_price: np.ndarray
    scale_sizes: dict[str, list[str]]
    styles: list[str]
    brands: list[str]

    def class_row(self, department: str, cls: str) -> int:
        """Class code of ``cls`` in ``department``."""
        d = self.departments.index(department)
        rows = np.flatnonzero(self.class_department == d)
        names = [self.class_names[r] for r in rows]
        return int(rows[names.index(cls)])

    def department_classes(self, department: str) -> np.ndarray:
        """Class codes of a department."""
        return np.flatnonzero(self.class_department == self.departments.index(department))


def size_scale_of(department: str, cls: str, cfg: CatalogConfig) -> str:
    """The size scale of a class: the first matching ``size_rules`` entry, else ``none``."""
    for rule in cfg.size_rules:
        if (fnmatch.fnmatch(department.lower(), rule.department.lower())
                and fnmatch.fnmatch(cls.lower(), rule.classes.lower())):
            return rule.scale
    return "none"


def build_catalog(hierarchy: Hierarchy, cfg: CatalogConfig, seed: int) -> Catalog:
    """Draw items, brands, styles, colours, sizes and prices for every sellable merchandise class.

    Every class with at least three items has items of all three brand
    tiers, so a persona's tier affinity can always be honoured.
    """
    rng = np.random.default_rng([seed, 1])
    departments = hierarchy.merchandise_departments
    class_department, class_names, class_price, class_scale = [], [], [], []
    for d, dept in enumerate(departments):
        low, high = cfg.department_price_ranges[dept]
        for cls in hierarchy.departments[dept].classes:
            class_department.append(d)
            class_names.append(cls)
            class_price.append(rng.uniform(low, high))
            class_scale.append(SIZE_SCALES.index(size_scale_of(dept, cls, cfg)))
    class_department = np.array(class_department)
    class_scale = np.array(class_scale)
    n_low, n_high = (int(v) for v in cfg.items_per_class)
    n_items = rng.integers(n_low, n_high + 1, size=len(class_names))
    first_item = np.concatenate([[0], np.cumsum(n_items)[:-1]])
    item_class = np.repeat(np.arange(len(class_names)), n_items)
    within = np.arange(len(item_class)) - first_item[item_class]

    tier_share = np.array([cfg.brand_tiers[t].catalog_share for t in BRAND_TIERS])
    item_tier = rng.choice(len(BRAND_TIERS), size=len(item_class), p=tier_share / tier_share.sum())
    # The first three items of each class are one per tier.
    item_tier = np.where(within < min(3, n_low), within % 3, item_tier)

    styles = list(cfg.styles)
    item_style = np.empty(len(item_class), dtype=np.int64)
    for d, dept in enumerate(departments):
        allowed = [styles.index(s) for s in cfg.department_styles.get(dept, styles)]
        rows = np.flatnonzero(class_department[item_class] == d)
        item_style[rows] = np.asarray(allowed)[rng.integers(0, len(allowed), size=len(rows))]
    item_color = rng.integers(0, len(cfg.colors), size=len(item_class))
    brands = [b for t in BRAND_TIERS for b in cfg.brand_tiers[t].brands]
    tier_first_brand = np.cumsum([0] + [len(cfg.brand_tiers[t].brands) for t in BRAND_TIERS])
    tier_n_brands = np.diff(tier_first_brand)
    item_brand = tier_first_brand[item_tier] + np.floor(
        rng.random(len(item_class)) * tier_n_brands[item_tier]).astype(np.int64)

    factor = np.array([cfg.brand_tiers[t].price_factor for t in BRAND_TIERS])
    sigma = cfg.item_price_sigma
    price = (np.asarray(class_price)[item_class] * factor[item_tier]
             * rng.lognormal(-sigma**2 / 2, sigma, len(item_class)))
    # Shelf prices end in .99 or .49, as on a till receipt.
    item_price = np.maximum(np.floor(price) + np.where(rng.random(len(price)) < 0.7, 0.99, 0.49), 0.49)

    scale_sizes = scale_size_names(cfg)
    sizes_per_scale = np.array([len(scale_sizes[s]) for s in SIZE_SCALES])
    item_n_skus = sizes_per_scale[class_scale[item_class]]
    item_first_sku = np.concatenate([[0], np.cumsum(item_n_skus)[:-1]])

    sku_item = np.repeat(np.arange(len(item_class)), item_n_skus)
    sku_size_idx = np.arange(len(sku_item)) - item_first_sku[sku_item]
    sku_scale = class_scale[item_class[sku_item]]
    size_text = np.array([scale_sizes[SIZE_SCALES[sc]][k] if SIZE_SCALES[sc] != "none" else None
                          for sc, k in zip(sku_scale, sku_size_idx)], dtype=object)
    dept_codes = np.array([slug(d)[:4].upper() for d in departments])
    sku_class = item_class[sku_item]
    item_code = np.char.add(np.char.add(dept_codes[class_department[sku_class]], "-"),
                            np.char.zfill(sku_class.astype(str), 3))
    item_code = np.char.add(np.char.add(item_code, "-"), np.char.zfill(within[sku_item].astype(str), 2))
    size_code = np.array([slug(s).upper() if s is not None else "NS" for s in size_text])
    products = pd.DataFrame({
        "sku": np.char.add(np.char.add(item_code, "-"), size_code).astype(object),
        "item_id": item_code.astype(object),
        "department": np.asarray(departments, dtype=object)[class_department[sku_class]],
        "class": np.asarray(class_names, dtype=object)[sku_class],
        "brand": np.asarray(brands, dtype=object)[item_brand[sku_item]],
        "brand_tier": np.asarray(BRAND_TIERS, dtype=object)[item_tier[sku_item]],
        "style": np.asarray(styles, dtype=object)[item_style[sku_item]],
        "color": np.asarray(cfg.colors, dtype=object)[item_color[sku_item]],
        "size_scale": np.asarray(SIZE_SCALES, dtype=object)[sku_scale],
        "size": size_text,
        "base_price": np.round(item_price[sku_item], 2),
    })
    return Catalog(products=products, departments=list(departments), class_department=class_department,
                   class_names=class_names, class_first_item=first_item, class_n_items=n_items,
                   class_scale=class_scale, item_class=item_class, item_tier=item_tier,
                   item_style=item_style, item_color=item_color, item_brand=item_brand,
                   item_first_sku=item_first_sku, item_price=item_price, scale_sizes=scale_sizes,
                   styles=styles, brands=brands)


def scale_size_names(cfg: CatalogConfig) -> dict[str, list[str]]:
    """Sizes of every scale, in SKU order (kids' bands by age)."""
    sizes = {scale: list(cfg.adult_sizes[scale]) for scale in cfg.adult_sizes}
    sizes["kids"] = sorted(cfg.kids_size_bands, key=lambda s: cfg.kids_size_bands[s][0])
    sizes["kids_footwear"] = sorted(cfg.kids_footwear_bands, key=lambda s: cfg.kids_footwear_bands[s][0])
    sizes["none"] = [""]
    assert set(KIDS_SCALES) <= set(sizes)
    return sizes
