"""Optional integrations: import the submodule you need (prometheus, otel, fernet, django)."""
