"""Bringing embeddings made by other tools into a home, without embedding anything again."""
