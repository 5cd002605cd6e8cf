"""Shared by every room, importing nothing of promptgate outside core: errors, paths, the contract."""
