"""Guards for the package layout DESIGN.md depends on."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_graphql_folder_has_no_init_anywhere() -> None:
    offenders = [p for p in (ROOT / "graphql").rglob("__init__.py")]
    assert offenders == [], f"{offenders} would shadow graphql-core"


def test_import_graphql_is_graphql_core() -> None:
    import graphql

    assert graphql.__file__ is not None and "site-packages" in graphql.__file__
    assert hasattr(graphql, "graphql_sync")
    assert hasattr(graphql, "GraphQLSchema")


def test_cms_packages_map_to_top_level_folders() -> None:
    import cms.app.config
    import cms.storage

    assert Path(cms.app.config.__file__).resolve() == ROOT / "app" / "config.py"
    assert Path(next(iter(cms.storage.__path__))).resolve() == ROOT / "storage"


def test_graphql_names_follow_the_contract() -> None:
    from cms.graphql.names import collection_field, field_name, type_name

    assert type_name("blog_post") == "BlogPost" and field_name("blog_post") == "blogPost"
    assert collection_field("article") == "articleCollection" and type_name("a_b_c2") == "ABC2"
