"""(filled in by the owning module)."""
