"""GraphQL names derived from content type ids (API.md: `blog_post` → `BlogPost`, `blogPost`)."""

from __future__ import annotations


def type_name(type_id: str) -> str:
    """PascalCase GraphQL type name of a content type id."""
    return "".join(part[:1].upper() + part[1:] for part in type_id.split("_") if part)


def field_name(type_id: str) -> str:
    """camelCase root field name of a content type id."""
    pascal = type_name(type_id)
    return pascal[:1].lower() + pascal[1:]


def collection_field(type_id: str) -> str:
    return f"{field_name(type_id)}Collection"
