"""Which series are watched, and slices as labels (pure)."""

from __future__ import annotations

import pytest

from insights.series import (
    Volume,
    compatible,
    contains,
    parse_slice,
    select_series,
    slice_label,
    slice_text,
)


def test_slices_read_and_write_as_alert_labels() -> None:
    sl = parse_slice("device=mobile,country=DE")
    assert sl == (("country", "DE"), ("device", "mobile"))
    assert slice_label(sl) == "country=DE,device=mobile" and slice_label(()) == "all"
    assert parse_slice("all") == ()
    assert slice_text(sl) == "in DE on mobile" and slice_text(()) == "overall"
    with pytest.raises(ValueError):
        parse_slice("planet=mars")


def test_compatible_and_contained_slices() -> None:
    de, mobile = (("country", "DE"),), (("device", "mobile"),)
    assert compatible(de, mobile) and compatible((), de)
    assert not compatible(de, (("country", "FR"),))
    assert contains((), de) and contains(de, (("country", "DE"), ("device", "mobile")))
    assert not contains(de, mobile)


def test_slices_are_watched_by_what_their_volume_supports() -> None:
    volumes = {
        (): Volume(5000, 60),
        (("country", "DE"),): Volume(800, 10),
        (("country", "EE"),): Volume(60, 1),
        (("country", "MT"),): Volume(10, 0),
    }
    keys = {(k.metric, k.slice) for k in select_series(volumes, "1m")}
    assert ("conversion_rate", ()) in keys and ("orders", (("country", "DE"),)) in keys
    assert ("sessions", (("country", "EE"),)) in keys  # enough sessions ...
    assert ("orders", (("country", "EE"),)) not in keys  # ... too few orders a minute
    assert not any(sl == (("country", "MT"),) for _, sl in keys)
