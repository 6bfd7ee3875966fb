"""Failure messages to categories: every wording the service has used over the years."""

from __future__ import annotations

import pytest

from imgtools.failures import CATEGORIES, IMPORT_CODES, categorize, categorize_all


@pytest.mark.parametrize(("message", "category"), [
    ("An image may only be exported by the image owner.", "not owner"),
    ("The export of Windows based images is not allowed. Distribution of Windows code is not "
     "allowed in the Service Provider License Agreement.", "licensing"),
    ("Image cannot be exported due to licensing or billing restrictions "
     "(com.rackspace__1__options: '2')", "licensing"),
    ("Container not found. Container: backups", "container missing"),
    ("container 'backups' does not exist", "container missing"),
    ("Swift already has an object with id 'ca5e7f11.vhd' in container 'exports'",
     "object exists"),
    ("Object already exists in user's container. Container/Object: exports/ca5e7f11.vhd",
     "object exists"),
    ("Image cannot be imported. Error code: '396'", "import validation 396"),
    ("Image cannot be imported. Error code: '721'", "import validation 721"),
    ("Requested image for export was not found: ca5e7f11", "image not found"),
    ("Error: Image not found for import. Possible invalid location", "image not found"),
    ("Unsupported element in image_properties, please consult the documentation.",
     "bad input"),
    ("Unknown error occurred during image export", "service error"),
    ("Unknown error occurred during execution", "service error"),
    ("The hamsters went on strike", "unknown"),
    (None, "no details"), ("None", "no details"), ("", "no details"),
])
def test_categorize(message: str | None, category: str) -> None:
    assert str(categorize(message)) == category


def test_every_category_is_listed_and_codes_are_documented() -> None:
    assert {"not owner", "licensing", "container missing", "object exists",
            "import validation", "unknown"} <= set(CATEGORIES)
    assert categorize("Image cannot be imported. Error code: '396'").code in IMPORT_CODES
    assert categorize_all(["Container not found. Container: a", None,
                           "Container not found. Container: a"]) == [
        "container missing", "no details", "container missing"]
