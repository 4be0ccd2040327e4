"""Data: sources, splitting, tiling, resizing and the torch Dataset."""
