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
    ["older", "#c9b8a0", "longer ago"]
  ];
  var UNCOVERED = "#5f6675";
  var ROAD_CLASSES = [
    ["major", "motorway, trunk", ["motorway", "motorway_link", "trunk", "trunk_link"], 2.5],
    ["primary", "primary", ["primary", "primary_link"], 2],
    ["secondary", "secondary", ["secondary", "secondary_link"], 1.6],
    ["tertiary", "tertiary", ["tertiary", "tertiary_link"], 1.3],
    ["residential", "residential", ["residential", "living_street"], 1],
    ["unclassified", "unclassified", ["unclassified"], 1],
    ["service", "service", ["service"], 0.7],
    ["other", "other", null, 0.7]
  ];

  var PRIORITY_CELL_STOPS = [[0, "#fdd49e"], [1, "#fc8d59"], [5, "#d7301f"]];
  var TOUR_COLOUR = "#ff00ff";

  function gainColour() {
    var gain = ["+", ["coalesce", ["get", "new_km"], 0], ["coalesce", ["get", "stale_km"], 0]];
    var expression = ["interpolate", ["linear"], gain];
    PRIORITY_CELL_STOPS.forEach(function (stop) { expression.push(stop[0], stop[1]); });
    return expression;
  }

  function fillPriorityLegend() {
    var section = document.querySelector("#panel .legend");
    var heading = document.createElement("h2");
    heading.textContent = "Where to drive next";
    var ramp = document.createElement("div");
    ramp.id = "priority-ramp";
    ramp.className = "ramp";
    ramp.style.background = "linear-gradient(to right, " + PRIORITY_CELL_STOPS.map(function (stop) {
      return stop[1];
    }).join(", ") + ")";
    var labels = document.createElement("div");
    labels.className = "ramp-labels";
    ["0", "1", "5+ km to gain"].forEach(function (text) {
      var span = document.createElement("span");
      span.textContent = text;
      labels.appendChild(span);
    });
    var tours = document.createElement("ul");
    tours.id = "tour-legend";
    var item = document.createElement("li");
    var swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = TOUR_COLOUR;
    item.appendChild(swatch);
    item.appendChild(document.createTextNode("tours (GPX in the priorities folder)"));
    tours.appendChild(item);
    [heading, ramp, labels, tours].forEach(function (element) { section.appendChild(element); });
  }

  function freshnessColour() {
    var expression = ["match", ["get", "age_bucket"]];
    FRESHNESS.forEach(function (bucket) { expression.push(bucket[0], bucket[1]); });
    expression.push("#c9b8a0");
    return expression;
  }

  /* Roads: every road of the graph, grey, wider for larger classes. */
  function namedClasses() {
    var names = [];
    ROAD_CLASSES.forEach(function (c) { if (c[2]) { names = names.concat(c[2]); } });
    return names;
  }

  function roadWidth() {
    var factor = ["match", ["get", "highway"]];
    ROAD_CLASSES.forEach(function (c) { if (c[2]) { factor.push(c[2], c[3]); } });
    factor.push(0.7);
    return ["interpolate", ["linear"], ["zoom"],
      5, ["*", 0.4, factor], 12, ["*", 1, factor], 16, ["*", 4, factor]];
  }

  function roadsLayer() {
    return {
      id: "roads", type: "line", source: "coverage", "source-layer": "roads",
      layout: { "line-cap": "round", "line-join": "round" },
      paint: { "line-color": UNCOVERED, "line-width": roadWidth() }
    };
  }

  /* The class filter: one checkbox per class, applied to roads and covered pieces. */
  var hiddenClasses = {};

  function classFilter() {
    var shown = ["any"];
    ROAD_CLASSES.forEach(function (c) {
      if (hiddenClasses[c[0]]) { return; }
      if (c[2]) {
        shown.push(["in", ["get", "highway"], ["literal", c[2]]]);
      } else {
        shown.push(["!", ["in", ["get", "highway"], ["literal", namedClasses()]]]);
      }
    });
    return shown;
  }

  function setupClassFilter(map) {
    var box = document.getElementById("class-filter");
    ROAD_CLASSES.forEach(function (c) {
      var label = document.createElement("label");
      var input = document.createElement("input");
      input.type = "checkbox";
      input.checked = true;
      input.value = c[0];
      input.addEventListener("change", function () {
        hiddenClasses[c[0]] = !input.checked;
        applyRoadFilters(map);
      });
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + c[1]));
      box.appendChild(label);
    });
  }

  /* The time slider: the covered network as of the end of a past week. */
  var weekIndex = null;

  function timeFilter() {
    var weeks = config.weeks || [];
    if (weekIndex === null || weekIndex >= weeks.length - 1) { return null; }
    return ["<", ["get", "first_seen_s"], weeks[weekIndex]];
  }

  function weekLabel(index) {
    var weeks = config.weeks || [];
    if (!weeks.length) { return "–"; }
    var date = new Date(weeks[index] * 1000).toISOString().slice(0, 10);
    return index >= weeks.length - 1 ? date + " (now)" : date;
  }

  function setupTimeSlider(map) {
    var slider = document.getElementById("time-slider");
    var weeks = config.weeks || [];
    slider.max = String(Math.max(weeks.length - 1, 0));
    slider.value = slider.max;
    slider.disabled = weeks.length < 2;
    document.getElementById("time-label").textContent = weekLabel(weeks.length - 1);
    slider.addEventListener("input", function () {
      weekIndex = Number(slider.value);
      document.getElementById("time-label").textContent = weekLabel(weekIndex);
      applyRoadFilters(map);
    });
  }

  function applyRoadFilters(map) {
    map.setFilter("roads", classFilter());
    var time = timeFilter();
    map.setFilter("segments", time ? ["all", classFilter(), time] : classFilter());
  }

  /* Cells: coloured by coverage or by the share of road driven in the last 28 days. */
  function freshShare() {
    return ["*", 100, ["/", ["coalesce", ["get", "fresh_28d_km"], 0],
      ["max", ["coalesce", ["get", "road_km"], 0], 1e-9]]];
  }

  function cellColour(metric) {
    var value = metric === "fresh" ? freshShare() : ["coalesce", ["get", "coverage_pct"], 0];
    var expression = ["interpolate", ["linear"], value];
    COVERAGE_STOPS.forEach(function (stop) { expression.push(stop[0], stop[1]); });
    return expression;
  }

  function setupCellSwitch(map) {
    document.querySelectorAll("input[name=cell-metric]").forEach(function (input) {
      input.addEventListener("change", function () {
        if (input.checked) { map.setPaintProperty("cells", "fill-color", cellColour(input.value)); }
      });
    });
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
    FRESHNESS.concat([["none", UNCOVERED, "never (uncovered)"]]).forEach(function (bucket) {
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

  function percent(value) {
    return value === undefined || value === null ? "–" : number(value, 1) + " %";
  }

  function describeRoad(road, segment) {
    var p = road.properties;
    var rows = [
      ["Name", p.name || "–"],
      ["Class", p.highway],
      ["Length", number(p.length_m, 0) + " m"],
      ["Covered", percent(p.covered_pct)],
      ["First seen", p.first_seen || "never"],
      ["Last seen", p.last_seen || "never"],
      ["Passes", number(p.passes, 0)],
      ["Contributors", p.contributors_bucket]
    ];
    if (segment) {
      var s = segment.properties;
      rows.push(["Piece", number(s.from_m, 1) + "–" + number(s.to_m, 1) + " m"]);
      rows.push(["Piece age", number(s.age_days, 1) + " days (" + s.age_bucket + ")"]);
    }
    return table(rows);
  }

  function describe(feature) {
    var p = feature.properties;
    if (feature.layer.id === "priority-tours") {
      return table([
        ["Tour", p.tour],
        ["Length", number(p.length_km, 1) + " km"],
        ["Never driven", number(p.new_km, 2) + " km"],
        ["Stale", number(p.stale_km, 2) + " km"],
        ["Gained per km driven", number(p.gain_per_km, 2)],
        ["GPX", p.gpx]
      ]);
    }
    if (feature.layer.id === "priority-cells") {
      return table([
        ["H3 cell", p.h3],
        ["Rank", p.rank],
        ["Never driven", number(p.new_km, 2) + " km"],
        ["Stale", number(p.stale_km, 2) + " km"],
        ["Roads to drive", p.roads],
        ["Tour", p.tour === null || p.tour === undefined ? "none" : p.tour]
      ]);
    }
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

  var sources = {
    coverage: {
      type: "vector",
      url: "pmtiles://" + tilesUrl,
      attribution: "© OpenStreetMap contributors"
    }
  };
  var layers = [
    { id: "background", type: "background", paint: { "background-color": BACKGROUND } },
    {
      id: "cells", type: "fill", source: "coverage", "source-layer": "cells",
      paint: { "fill-color": cellColour("coverage"), "fill-opacity": 0.6 }
    },
    {
      id: "cells-outline", type: "line", source: "coverage", "source-layer": "cells",
      paint: { "line-color": "#ffffff", "line-opacity": 0.35, "line-width": 0.6 }
    },
    roadsLayer(),
    {
      id: "segments", type: "line", source: "coverage", "source-layer": "segments",
      layout: { "line-cap": "round", "line-join": "round" },
      paint: {
        "line-color": freshnessColour(),
        "line-width": ["interpolate", ["linear"], ["zoom"], 10, 1, 14, 3, 18, 8]
      }
    }
  ];
  var clickable = ["segments", "roads", "cells"];
  if (config.priorities) {
    sources.priorityCells = {
      type: "geojson", data: new URL(config.priorities.cells, window.location.href).href
    };
    sources.priorityTours = {
      type: "geojson", data: new URL(config.priorities.tours, window.location.href).href
    };
    layers.splice(3, 0, {
      id: "priority-cells", type: "fill", source: "priorityCells",
      paint: { "fill-color": gainColour(), "fill-opacity": 0.45, "fill-outline-color": "#ff8c00" }
    });
    layers.push({
      id: "priority-tours", type: "line", source: "priorityTours",
      layout: { "line-cap": "round", "line-join": "round" },
      paint: {
        "line-color": TOUR_COLOUR,
        "line-width": ["interpolate", ["linear"], ["zoom"], 10, 1.5, 14, 3, 18, 6]
      }
    });
    clickable = ["priority-tours", "segments", "roads", "priority-cells", "cells"];
    fillPriorityLegend();
  }

  var map = new maplibregl.Map({
    container: "map",
    bounds: config.bounds,
    fitBoundsOptions: { padding: { top: 40, bottom: 40, left: 290, right: 40 } },
    attributionControl: { compact: true },
    style: { version: 8, sources: sources, layers: layers }
  });
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
  map.addControl(new maplibregl.ScaleControl(), "bottom-right");

  map.on("error", function (event) {
    console.error("map error: " + (event.error && event.error.message ? event.error.message : event));
  });

  map.on("click", function (event) {
    var box = [[event.point.x - 3, event.point.y - 3], [event.point.x + 3, event.point.y + 3]];
    var features = map.queryRenderedFeatures(box, { layers: clickable });
    if (!features.length) { return; }
    var tour = features.find(function (f) { return f.layer.id === "priority-tours"; });
    var road = features.find(function (f) { return f.layer.id === "roads"; });
    var segment = features.find(function (f) { return f.layer.id === "segments"; });
    var content = tour ? describe(tour) : road ? describeRoad(road, segment) : describe(features[0]);
    new maplibregl.Popup({ maxWidth: "320px" })
      .setLngLat(event.lngLat)
      .setDOMContent(content)
      .addTo(map);
  });
  clickable.forEach(function (layer) {
    map.on("mouseenter", layer, function () { map.getCanvas().style.cursor = "pointer"; });
    map.on("mouseleave", layer, function () { map.getCanvas().style.cursor = ""; });
  });

  setupClassFilter(map);
  setupTimeSlider(map);
  setupCellSwitch(map);

  map.once("load", function () {
    map.once("idle", function () {
      window.roadcoverReady = true;
    });
  });
  window.roadcoverMap = map;
})();
