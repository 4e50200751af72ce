import pytest

from parley.domain.goals import slugify


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Customer Support", "customer-support"),
        ("  Refunds & Returns!  ", "refunds-returns"),
        ("Café Crème", "cafe-creme"),
        ("!!!", ""),
        ("x" * 100, "x" * 64),
    ],
)
def test_slugify_derives_goal_ids_from_names(name: str, slug: str) -> None:
    """Names become lowercase ASCII slugs of at most 64 characters."""
    assert slugify(name) == slug
