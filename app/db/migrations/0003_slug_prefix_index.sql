-- Auto-slugs look for taken "base" and "base-N" values; a byte-order (C collation) index
-- turns that prefix search into a range scan whatever the database's default collation is.
CREATE INDEX entry_unique_values_prefix
    ON entry_unique_values (type, field, locale, (value COLLATE "C"));
