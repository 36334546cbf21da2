"""Fake identity fields (names, emails, phones, addresses) from pools made by Faker.

Calling Faker once per customer would cost minutes at a million customers,
so Faker fills a pool per field once, seeded, and customers draw from the
pools with the generator's NumPy random streams. Emails combine the drawn
name with a number so that they stay plausible and mostly distinct.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class IdentityPools:
    """Values Faker made, per field."""

    female_first: np.ndarray
    male_first: np.ndarray
    last: np.ndarray
    street: np.ndarray
    postcode: np.ndarray
    email_domain: np.ndarray
    phone_prefix: np.ndarray


def build_identity_pools(locale: str, size: int, seed: int) -> IdentityPools:
    """Make ``size`` values per field with Faker's ``locale`` provider, seeded by ``seed``."""
    from faker import Faker

    fake = Faker(locale)
    fake.seed_instance(seed)

    def pool(make) -> np.ndarray:
        return np.array([make() for _ in range(size)], dtype=object)

    return IdentityPools(
        female_first=pool(fake.first_name_female), male_first=pool(fake.first_name_male),
        # Faker writes multi-line streets ("Flat 3\nKelly Ferry"); one line suits a table cell.
        last=pool(fake.last_name), street=pool(lambda: fake.street_address().replace("\n", ", ")),
        postcode=pool(fake.postcode),
        email_domain=np.array(sorted({fake.free_email_domain() for _ in range(50)}), dtype=object),
        phone_prefix=np.array(["07" + str(v) for v in range(100, 1000, 37)], dtype=object),
    )


def assign_identities(pools: IdentityPools, female: np.ndarray, customer_id: np.ndarray,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw a fake identity per customer; ``female`` picks the first-name pool."""
    n = len(female)
    if n == 0:
        return {name: np.zeros(0, dtype=object) for name in ("first_name", "last_name", "email", "phone",
                                                             "street_address", "postcode")}
    first = np.where(female, pools.female_first[rng.integers(0, len(pools.female_first), n)],
                     pools.male_first[rng.integers(0, len(pools.male_first), n)])
    last = pools.last[rng.integers(0, len(pools.last), n)]
    domain = pools.email_domain[rng.integers(0, len(pools.email_domain), n)]
    # Plain string formatting per customer: NumPy's char functions cost several times more.
    email = np.array([f"{(f + '.' + l).replace(' ', '').lower()}{i}@{d}"
                      for f, l, i, d in zip(first, last, customer_id.tolist(), domain)], dtype=object)
    prefix = pools.phone_prefix[rng.integers(0, len(pools.phone_prefix), n)]
    phone = np.array([f"{p}{v:06d}" for p, v in zip(prefix, rng.integers(0, 1_000_000, n).tolist())],
                     dtype=object)
    return {
        "first_name": first, "last_name": last, "email": email, "phone": phone,
        "street_address": pools.street[rng.integers(0, len(pools.street), n)],
        "postcode": pools.postcode[rng.integers(0, len(pools.postcode), n)],
    }
