"""The web map's building blocks: assets, basemaps, map data files, the map, cards, pages."""
