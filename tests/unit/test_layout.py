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
