/* roadcover coverage viewer: MapLibre GL JS over a PMTiles archive, no network beyond this site. */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("roadcover-config").textContent);

  var BACKGROUND = "#1b1f2a";
  var COVERAGE_STOPS = [
    [0, "#d73027"],
    [25, "#fc8d59"],
    [50, "#fee08b"],
    [75, "#91cf60"],
    [100, "#1a9850"]
  ];
  var FRESHNESS = [
    ["7d", "#00e5ff", "within 7 days"],
    ["28d", "#2f7dff", "within 28 days"],
    ["90d", "#b06cff", "within 90 days"],
    ["365d", "#ff5fa2", "within a year"],
    ["older", "#9aa0ac", "longer ago"]
  ];

  function coverageColour() {
    var expression = ["interpolate", ["linear"], ["coalesce", ["get", "coverage_pct"], 0]];
    COVERAGE_STOPS.forEach(function (stop) { expression.push(stop[0], stop[1]); });
    return expression;
  }

  function freshnessColour() {
    var expression = ["match", ["get", "age_bucket"]];
    FRESHNESS.forEach(function (bucket) { expression.push(bucket[0], bucket[1]); });
    expression.push("#9aa0ac");
    return expression;
  }

  function number(value, digits) {
    if (value === undefined || value === null || isNaN(value)) { return "–"; }
    return Number(value).toLocaleString("en-US", {
      minimumFractionDigits: digits, maximumFractionDigits: digits
    });
  }

  function fillSummary() {
    var s = config.summary || {};
    document.getElementById("title").textContent = config.title;
    var rows = [
      ["Coverage", number(s.coverage_pct, 1) + " %"],
      ["Fresh (28 days)", number(s.fresh_28d_pct, 1) + " %"],
      ["Unique km driven", number(s.unique_km, 1)],
      ["Road km", number(s.road_km, 1)],
      ["Total km driven", number(s.total_km, 1)],
      ["Share of world roads", number(s.percent_of_world, 6) + " %"],
      ["As of", (s.as_of || "").slice(0, 10)]
    ];
    var list = document.getElementById("summary");
    rows.forEach(function (row) {
      var dt = document.createElement("dt");
      dt.textContent = row[0];
      var dd = document.createElement("dd");
      dd.textContent = row[1];
      list.appendChild(dt);
      list.appendChild(dd);
    });
    var ramp = COVERAGE_STOPS.map(function (stop) { return stop[1] + " " + stop[0] + "%"; });
    document.getElementById("coverage-ramp").style.background =
      "linear-gradient(to right, " + ramp.join(", ") + ")";
    var legend = document.getElementById("freshness-legend");
    FRESHNESS.forEach(function (bucket) {
      var item = document.createElement("li");
      var swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = bucket[1];
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(bucket[2]));
      legend.appendChild(item);
    });
  }

  function table(rows) {
    var element = document.createElement("table");
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      var th = document.createElement("th");
      th.textContent = row[0];
      var td = document.createElement("td");
      td.textContent = row[1];
      tr.appendChild(th);
      tr.appendChild(td);
      element.appendChild(tr);
    });
    return element;
  }

  function describe(feature) {
    var p = feature.properties;
    if (feature.layer.id === "segments") {
      return table([
        ["Road", p.highway],
        ["Interval", number(p.from_m, 1) + "–" + number(p.to_m, 1) + " m"],
        ["Passes", number(p.passes, 0)],
        ["Contributors", number(p.contributors, 0)],
        ["Last seen", p.last_seen || "never"],
        ["Age", number(p.age_days, 1) + " days (" + p.age_bucket + ")"],
        ["Edge", p.edge_id]
      ]);
    }
    return table([
      ["H3 cell", p.cell + " (res " + p.resolution + ")"],
      ["Coverage", number(p.coverage_pct, 1) + " %"],
      ["Unique km", number(p.unique_km, 3)],
      ["Road km", number(p.road_km, 3)],
      ["Total km driven", number(p.total_km, 3)],
      ["Fresh km (28 d)", number(p.fresh_28d_km, 3)],
      ["Passes", number(p.passes, 0)],
      ["Last seen", p.last_seen || "never"],
      ["Age", p.age_days === undefined ? "–" : number(p.age_days, 1) + " days"]
    ]);
  }

  fillSummary();

  var protocol = new pmtiles.Protocol();
  maplibregl.addProtocol("pmtiles", protocol.tile);
  var tilesUrl = new URL(config.tiles, window.location.href).href;

  var map = new maplibregl.Map({
    container: "map",
    bounds: config.bounds,
    fitBoundsOptions: { padding: { top: 40, bottom: 40, left: 290, right: 40 } },
    attributionControl: { compact: true },
    style: {
      version: 8,
      sources: {
        coverage: {
          type: "vector",
          url: "pmtiles://" + tilesUrl,
          attribution: "© OpenStreetMap contributors"
        }
      },
      layers: [
        { id: "background", type: "background", paint: { "background-color": BACKGROUND } },
        {
          id: "cells", type: "fill", source: "coverage", "source-layer": "cells",
          paint: { "fill-color": coverageColour(), "fill-opacity": 0.6 }
        },
        {
          id: "cells-outline", type: "line", source: "coverage", "source-layer": "cells",
          paint: { "line-color": "#ffffff", "line-opacity": 0.35, "line-width": 0.6 }
        },
        {
          id: "segments", type: "line", source: "coverage", "source-layer": "segments",
          layout: { "line-cap": "round", "line-join": "round" },
          paint: {
            "line-color": freshnessColour(),
            "line-width": ["interpolate", ["linear"], ["zoom"], 10, 1, 14, 3, 18, 8]
          }
        }
      ]
    }
  });
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
  map.addControl(new maplibregl.ScaleControl(), "bottom-right");

  map.on("error", function (event) {
    console.error("map error: " + (event.error && event.error.message ? event.error.message : event));
  });

  map.on("click", function (event) {
    var box = [[event.point.x - 3, event.point.y - 3], [event.point.x + 3, event.point.y + 3]];
    var features = map.queryRenderedFeatures(box, { layers: ["segments", "cells"] });
    if (!features.length) { return; }
    new maplibregl.Popup({ maxWidth: "320px" })
      .setLngLat(event.lngLat)
      .setDOMContent(describe(features[0]))
      .addTo(map);
  });
  ["cells", "segments"].forEach(function (layer) {
    map.on("mouseenter", layer, function () { map.getCanvas().style.cursor = "pointer"; });
    map.on("mouseleave", layer, function () { map.getCanvas().style.cursor = ""; });
  });

  map.once("load", function () {
    map.once("idle", function () {
      window.roadcoverReady = true;
    });
  });
  window.roadcoverMap = map;
})();
