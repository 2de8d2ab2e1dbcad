"""The export stage: products made from a coverage folder, for people to look at and to buy.

Map products (each reads only the coverage folder's edge and cell coverage, through
:func:`pipeline.coverage.edge_reader.read_edge_table` and
:func:`pipeline.coverage.cell_reader.read_cell_table`, and ``summary.json``, and writes
atomically):

- :func:`pipeline.export.tiles.write_coverage_tiles`: a PMTiles v3 archive of Mapbox Vector
  Tiles with layers ``cells`` (H3 coverage, resolution chosen per zoom) and ``segments``
  (the covered road intervals, coloured by freshness), built with tippecanoe.
- :func:`pipeline.export.raster.write_coverage_rasters`: Cloud-Optimized GeoTIFFs in Web
  Mercator of ``coverage_pct`` and ``age_days``.
- :func:`pipeline.export.viewer.write_viewer`: a self-contained, offline static web map
  (MapLibre GL JS and pmtiles, vendored in ``pipeline/export/static``) over the tiles.
- :func:`pipeline.export.server.serve_directory`: a loopback HTTP server that sends only the
  viewer's files (no links followed, no listing) and answers Range requests, to open it locally.

Data feeds for buyers live in :mod:`pipeline.export.feeds`. Where to drive next (roads and
H3 cells ranked by what driving them gains, and tours of the top cells as GeoJSON and GPX; it
also reads the roads folder) is :func:`pipeline.export.priorities.export_priorities`, its
routes planned by :mod:`pipeline.export.tours`.
"""
