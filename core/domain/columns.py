"""The column vocabulary every stage shares: ids, the unknown bucket, noise, identifiers, calendar.

Names a later stage also uses live here, so a stage never reaches into a
later one for them.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable

ID_COLUMN = "customer_id"

# A retailer's department or class name the hierarchy does not know: the line is kept under this name.
UNKNOWN = "Unknown"

# Label of HDBSCAN's noise (a customer in no cluster).
NOISE = -1

# Mean days per calendar month (365.25 / 12): monthly rates from day counts.
DAYS_PER_MONTH = 365.25 / 12

# Line attributes that can become spend-share features.
ATTRIBUTE_COLUMNS = ("channel", "brand_tier", "style", "color", "brand")

# Direct identifiers: never summarised, never exported (matched case-insensitively).
IDENTIFIER_PATTERNS = ("customer_id", "*customerid*", "*cust*id*", "*name*", "*mail*", "*phone*", "*mobile*",
                       "*address*", "*street*", "*postcode*", "*post_code*", "*zip*")


def identifier_columns(columns: Iterable[str]) -> list[str]:
    """The columns whose names look like direct identifiers (names, emails, phones, addresses, ids)."""
    return [c for c in columns if any(fnmatch.fnmatch(c.lower(), p) for p in IDENTIFIER_PATTERNS)]
