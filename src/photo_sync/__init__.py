"""photo-sync: product photos from head office to every store's PostgreSQL."""

__version__ = "0.1.0"
