"""The tables stage 01 writes, column by column: one contract for every source.

``transactions.parquet``, ``customers.parquet`` and ``products.parquet`` have
the same columns whether the generator made them or a retailer's own log was
ingested, so later stages never ask where the data came from. A column that
a source does not have is present and null (for example ``channel`` in a log
without one); stage 02 drops the features that need it and says so.

The README's data dictionary is written from these lists
(``python scripts/data_dictionary.py``); a test fails when it is stale.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pyarrow as pa


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of an artifact table.

    Attributes
    ----------
    name : str
    type : pyarrow.DataType
    required : bool
        Never null: every source must provide it (or stage 01 derives it).
    meaning : str
        What the value is, for the data dictionary.
    """

    name: str
    type: pa.DataType
    required: bool
    meaning: str


TRANSACTION_TABLE = (
    Column("customer_id", pa.int64(), True, "Customer identifier."),
    Column("order_id", pa.int64(), True,
           "Transaction identifier: one purchase basket, or one return of items from a basket."),
    Column("order_date", pa.timestamp("us"), True, "Date of the purchase or of the return."),
    Column("channel", pa.string(), False, "`store` or `online`; null when the source has no channel."),
    Column("department", pa.string(), True,
           "Department of the product (config/hierarchy.yml); `Unknown` when the source had none "
           "or one the hierarchy does not know."),
    Column("class", pa.string(), True, "Class within the department; `Unknown` as for department."),
    Column("sku", pa.string(), False, "Stock-keeping unit: one product in one size and colour."),
    Column("brand", pa.string(), False, "Brand name of the SKU."),
    Column("brand_tier", pa.string(), False, "`value`, `mid` or `premium`."),
    Column("style", pa.string(), False, "`casual`, `formal`, `sport`, `trend` or `classic`."),
    Column("color", pa.string(), False, "Colour of the SKU."),
    Column("size", pa.string(), False,
           "Size of the SKU: adult letter size (XS-XXL), kids' age band (e.g. `Child 7-8`), "
           "shoe size (UK), or null where size makes no sense."),
    Column("quantity", pa.int32(), True, "Units; negative on return lines."),
    Column("unit_price", pa.float64(), True, "Price paid per unit after any discount."),
    Column("discount_amount", pa.float64(), False,
           "Discount on the line (quantity x (regular price - unit_price)); negative on return "
           "lines, like line_amount; null when the source has no discounts."),
    Column("line_amount", pa.float64(), True,
           "Value of the line: quantity x unit_price, negative on return lines."),
    Column("is_return", pa.bool_(), True, "True for the lines of a return transaction."),
    Column("original_order_id", pa.int64(), False,
           "On a return line, the order_id of the purchase it returns; null otherwise."),
)

CUSTOMER_TABLE = (
    Column("customer_id", pa.int64(), True, "Customer identifier."),
    Column("persona", pa.string(), False,
           "Generator's ground truth (config/personas.yml): for evaluation and description only, "
           "never a clustering feature; null for a retailer's own data. After a life event, the "
           "persona at the end of the history (persona_events.parquet has the change)."),
    Column("age", pa.int16(), False, "Age in years at the end of the history."),
    Column("gender", pa.string(), False, "`Female` or `Male`."),
    Column("has_children", pa.bool_(), False, "Shops for children living at home."),
    Column("lifestyle", pa.string(), False, "Short phrase from the persona."),
    Column("region", pa.string(), False, "Region of residence."),
    Column("signup_date", pa.timestamp("us"), False,
           "Day the customer joined (first possible purchase)."),
    Column("dropout_date", pa.timestamp("us"), False,
           "Generator's ground truth: day the customer stopped shopping; null if still active "
           "at the end of the history."),
    Column("first_name", pa.string(), False, "Fake identity (Faker); never leaves stage 01's outputs."),
    Column("last_name", pa.string(), False, "Fake identity (Faker)."),
    Column("email", pa.string(), False, "Fake identity (Faker)."),
    Column("phone", pa.string(), False, "Fake identity (Faker)."),
    Column("street_address", pa.string(), False, "Fake identity (Faker)."),
    Column("postcode", pa.string(), False, "Fake identity (Faker)."),
)

PRODUCT_TABLE = (
    Column("sku", pa.string(), True, "Stock-keeping unit: `<DEPT>-<class no>-<item no>-<size>`."),
    Column("item_id", pa.string(), True, "The product (one style and colour) the SKU is a size of."),
    Column("department", pa.string(), True, "Department (config/hierarchy.yml)."),
    Column("class", pa.string(), True, "Class within the department."),
    Column("brand", pa.string(), False, "Brand name."),
    Column("brand_tier", pa.string(), False, "`value`, `mid` or `premium`."),
    Column("style", pa.string(), False, "`casual`, `formal`, `sport`, `trend` or `classic`."),
    Column("color", pa.string(), False, "Colour."),
    Column("size_scale", pa.string(), False,
           "`ladies`, `mens`, `ladies_footwear`, `mens_footwear`, `kids`, `kids_footwear` or `none`: "
           "which sizes the class comes in; null when a retailer's data does not say."),
    Column("size", pa.string(), False, "Size, null when size_scale is `none`."),
    Column("base_price", pa.float64(), True, "Regular shelf price, before discounts."),
)

IDENTITY_COLUMNS = ("first_name", "last_name", "email", "phone", "street_address", "postcode")
"""Direct identifiers: kept in customers.parquet, never described, exported or clustered."""

GROUND_TRUTH_COLUMNS = ("persona", "dropout_date")
"""The generator's truth: for evaluation only."""


def column_names(table: tuple[Column, ...]) -> tuple[str, ...]:
    """The names of ``table``'s columns, in order."""
    return tuple(c.name for c in table)


def arrow_schema(table: tuple[Column, ...]) -> pa.Schema:
    """Arrow schema of ``table``, with pandas metadata so nullable integers read back as Int64."""
    fields = pa.schema([pa.field(c.name, c.type, nullable=not c.required) for c in table])
    empty = pd.DataFrame({c.name: pd.Series(dtype=_pandas_dtype(c)) for c in table})
    return fields.with_metadata(pa.Schema.from_pandas(empty, preserve_index=False).metadata)


def _pandas_dtype(column: Column) -> object:
    if pa.types.is_integer(column.type) and not column.required:
        return {"int16": "Int16", "int32": "Int32", "int64": "Int64"}[str(column.type)]
    if pa.types.is_boolean(column.type) and not column.required:
        return "boolean"
    return column.type.to_pandas_dtype()


TRANSACTION_COLUMNS = column_names(TRANSACTION_TABLE)
CUSTOMER_COLUMNS = column_names(CUSTOMER_TABLE)
PRODUCT_COLUMNS = column_names(PRODUCT_TABLE)
TRANSACTION_SCHEMA = arrow_schema(TRANSACTION_TABLE)
CUSTOMER_SCHEMA = arrow_schema(CUSTOMER_TABLE)

PERSONA_EVENTS_TABLE = (
    Column("customer_id", pa.int64(), True, "Customer identifier (customers.parquet)."),
    Column("event_date", pa.timestamp("us"), True,
           "Day the customer became the new persona: from it on they buy as that persona."),
    Column("from_persona", pa.string(), True, "Persona before the event (what customers.parquet's persona was)."),
    Column("to_persona", pa.string(), True, "Persona from the event on (customers.parquet's persona)."),
)
"""``persona_events.parquet``: the generator's life events (personas.yml ``life_events``), ground truth."""
PERSONA_EVENTS_SCHEMA = arrow_schema(PERSONA_EVENTS_TABLE)
PRODUCT_SCHEMA = arrow_schema(PRODUCT_TABLE)
